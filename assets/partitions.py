"""Partitions are campaign variants: one dynamic partition per variant, keyed `<campaign>.<variant>`."""

import dagster as dg

VARIANTS_PARTITION_NAME = "variants"

variant_partitions = dg.DynamicPartitionsDefinition(name=VARIANTS_PARTITION_NAME)
