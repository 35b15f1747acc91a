"""Status webhooks: signed events about a client's messages, pushed to its endpoints.

- ``config``    endpoints in a client's configuration, event types, the retry schedule
- ``outbox``    the Redis side: events recorded with the state change, deliveries due,
                their outcomes, dead letters and endpoint health
- ``send``      one attempt: the SSRF guard, the signed request, what the answer means
- ``pump``      moves recorded events to deliveries and publishes the due ones
- ``task``      the Celery task of the ``webhooks`` queue

docs/webhooks.md describes the whole loop.
"""
