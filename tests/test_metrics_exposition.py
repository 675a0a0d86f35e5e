"""The shared rendering of the metrics: one per format and FRESH seconds, whoever asks."""

from __future__ import annotations

import gzip

from prometheus_client import CollectorRegistry, Counter

from watcher.metrics.exposition import FRESH, Exposition

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _setup() -> tuple[Counter, Exposition, list[float]]:
    registry = CollectorRegistry()
    counter = Counter("scrapes_seen", "a figure that changes", registry=registry)
    now = [100.0]
    return counter, Exposition(registry, clock=lambda: now[0]), now


def test_a_rendering_answers_scrapes_until_it_is_fresh_no_more() -> None:
    counter, exposition, now = _setup()
    _, first = exposition.render("", "")
    counter.inc()
    now[0] += FRESH / 2
    assert exposition.render("", "")[1] == first and exposition.renderings == 1
    now[0] += FRESH / 2
    _, later = exposition.render("", "")
    assert later != first and b"scrapes_seen_total 1.0" in later and exposition.renderings == 2


def test_each_format_and_encoding_has_its_own_rendering() -> None:
    _, exposition, _ = _setup()
    text_headers, text = exposition.render("", "")
    om_headers, om = exposition.render(OPENMETRICS, "")
    gz_headers, gz = exposition.render(OPENMETRICS, "gzip")
    assert exposition.renderings == 3
    assert dict(text_headers)["Content-Type"].startswith("text/plain")
    assert dict(om_headers)["Content-Type"].startswith("application/openmetrics-text")
    assert om.endswith(b"# EOF\n") and not text.endswith(b"# EOF\n")
    assert dict(gz_headers)["Content-Encoding"] == "gzip" and gzip.decompress(gz) == om
    assert "Content-Encoding" not in dict(om_headers)
