"""farmwatch.collector"""
