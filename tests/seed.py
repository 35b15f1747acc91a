"""The seed page's example request (section 2.1.4), in one place for every test."""

from __future__ import annotations

import json
from typing import Any

SEED_CLIENT = "70374ddd0f3641368d419b2d93127b8f"
SEED_CHANNEL = "eba920d452d34adb8f2badb08b9e69bb"
SEED_VIDEO = "661d21d918d8476c88fc9b90279c400f.mp4"

# Byte for byte as the page shows it.
SEED_BODY = b"""{
    "to": "148992289019003396",
    "channelType": 1,
    "from": "u000193f6f02e01764a0f869be49a2be21e01",
    "messageType": 4,
    "ext": {
        "chatClient": "9bf18c20d5f54f459e0232246c2305c8",
        "chatType": "WX",
        "chatChannel": "f2b91d57f9cb4db7a06926b2fd5d9caf"
    },
    "messageInfo": {
        "videoMessage": "661d21d918d8476c88fc9b90279c400f.mp4"
    }
}"""


def seed_payload(video_key: str = SEED_VIDEO, **info: Any) -> dict[str, Any]:
    """The seed body as a dict, optionally with another video key and more messageInfo."""
    payload: dict[str, Any] = json.loads(SEED_BODY)
    payload["messageInfo"] = {"videoMessage": video_key, **info}
    return payload
