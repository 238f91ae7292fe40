"""farmwatch.collector.outputs"""
