"""The vocabulary every layer shares: records and their parsing, status enums, filters,
the path layout rules, units, the one Config, errors and the hash helper. Imports nothing
of ohpub above it.
"""
