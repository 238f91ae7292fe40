"""farmwatch.detectors"""
