"""Turning records into what people read. Knows records, never torch."""
