"""Shared GPU sets (`--share-gpus`): the pooled model, set packing, riders."""
