"""One dynamic partition per snapshot; the key is `names.partition_key(customer, timestamp)`."""

import dagster as dg

from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME

snapshot_partitions = dg.DynamicPartitionsDefinition(name=SNAPSHOTS_PARTITIONS_NAME)
