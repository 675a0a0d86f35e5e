"""``kind = "duplicates"``: rows beyond the first per key (ClickHouse inserts append; nothing dedupes them
until a merge of a ReplacingMergeTree, or OPTIMIZE … FINAL)."""

from __future__ import annotations

from checks.clickhouse import queries
from checks.clickhouse.table_check import TableCheck
from checks.config import DuplicatesConfig


class DuplicatesCheck(TableCheck):
    kind = "duplicates"

    def __init__(self, config: DuplicatesConfig) -> None:
        super().__init__(config, queries.duplicates(config))
