"""The GraphQL operation the harness sends: every field of ``Metrics``."""

from __future__ import annotations

__all__ = ["FULL_METRICS_QUERY"]

FULL_METRICS_QUERY = """
query BenchMetrics($instances: [String!]) {
  metrics(instances: $instances) {
    instance instances totalMessages messagesReceived messagesSent
    messagesByType { key count }
    groupMessages individualMessages messagesWithMedia
    mediaByType { key count }
    messagesByStatus { key count }
    uniqueChats uniqueGroups uniqueContacts
    messagesLast7Days messagesLast30Days firstMessageAt lastMessageAt
  }
}
"""
