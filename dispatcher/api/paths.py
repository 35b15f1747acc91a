"""The API's paths, shared by the server's routes and :mod:`dispatcher.client`."""

from __future__ import annotations

SUBMIT = "/sender/v1/handleBasicMessage"
SUBMIT_BATCH = "/sender/v1/handleBatchMessage"
STATUS = "/sender/v1/messages/{getMessageId}"
STATUS_MANY = "/sender/v1/messages/status"
DEAD_LETTERS = "/sender/v1/dead-letters"
DEAD_LETTERS_REPLAY = "/sender/v1/dead-letters/replay"
METRICS = "/metrics"
CANCEL = "/sender/v1/messages/{getMessageId}/cancel"
RECALL = "/sender/v1/messages/{getMessageId}/recall"
RECIPIENTS = "/sender/v1/messages/{getMessageId}/recipients"
