"""One dynamic partition per snapshot; the key is `snapshots.partition_key(customer, timestamp)`."""

import dagster as dg

SNAPSHOTS_PARTITIONS_NAME = "snapshots"

snapshot_partitions = dg.DynamicPartitionsDefinition(name=SNAPSHOTS_PARTITIONS_NAME)
