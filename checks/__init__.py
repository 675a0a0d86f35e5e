"""Checks: what runs when a phase completes, built in or from a plug-in.

The plug-in interface is ``checks.base``, what a check receives and returns (``CheckContext`` with its
``Phase``, ``ClickHouse`` and ``HostReader`` protocols; ``CheckResult``; ``measured`` for a threshold), and
``checks.config`` (the ``[[checks]]`` models; ``PluginCheckConfig`` for a plug-in's options). ``registry``
finds a kind's class, ``runner`` runs one check so that it can never produce ``ok`` by failing, and
``clickhouse/`` holds the built-in kinds.

The layers are one-way: ``watcher/`` (the daemon) imports ``checks/``, and ``checks/`` imports nothing of
``watcher/`` but ``watcher.units``, how durations are written in the configuration (a leaf module, so that a
check's ``timeout`` reads like every other duration). The watcher's phase record is never imported here: it
conforms to the ``Phase`` protocol. ``tests/test_import_graph.py`` fails on any other import, or on an import
cycle.
"""
