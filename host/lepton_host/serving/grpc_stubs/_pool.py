"""The stubs' own descriptor pool (see __init__.py: another copy of the same protos may sit in the default pool)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
