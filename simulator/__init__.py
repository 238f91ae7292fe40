"""farmwatch.simulator"""
