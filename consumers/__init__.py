"""Kafka consumer-group workers: status-projection and analytics."""
