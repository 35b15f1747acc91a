"""What ``dispatcher dev`` sets for the simulators it runs: credentials that only the
simulators accept, WeChat's routing, and shorter retries (explicit settings win)."""

from __future__ import annotations

import json

DEV_EASEMOB = {
    "DISPATCHER_EASEMOB_ORG": "dev-org",
    "DISPATCHER_EASEMOB_APP": "dev-app",
    "DISPATCHER_EASEMOB_CLIENT_ID": "dev-client-id",
    "DISPATCHER_EASEMOB_CLIENT_SECRET": "dev-client-secret",
}
DEV_QINIU = {
    "DISPATCHER_QINIU_ACCESS_KEY": "dev-access-key",
    "DISPATCHER_QINIU_SECRET_KEY": "dev-secret-key",
    "DISPATCHER_QINIU_BUCKET": "dev-bucket",
}
DEV_WECHAT_APPID = "wxdev0000000000001"
DEV_WECHAT = {
    "DISPATCHER_WECHAT_APPID": DEV_WECHAT_APPID,
    "DISPATCHER_WECHAT_SECRET": "dev-wechat-secret",
    "DISPATCHER_WECHAT_TEMPLATES": json.dumps({"1001": "DEV-TEMPLATE-ORDER"}),
    "DISPATCHER_WECHAT_SERVER_TOKEN": "dev-wechat-server-token",
}
DEV_OPENID = "oDevUser00000000000000000001"
"""A recipient shaped like a WeChat OpenID: dev mode's routing sends it to WeChat."""
DEV_ROUTING = {
    "DISPATCHER_ROUTING": json.dumps(
        {"default": "easemob", "rules": [{"channel": "wechat", "to": "o[A-Za-z0-9_-]{27}"}]}
    )
}
DEV_RETRIES = {"DISPATCHER_MAX_ATTEMPTS": "4", "DISPATCHER_BACKOFF_CAP": "2"}
DEV_WEBHOOK_SECRET = "whsec_ZGlzcGF0Y2hlci1kZXYtd2ViaG9vay1zZWNyZXQhIQ=="
"""The dev client's webhook secret (32 bytes; only dev mode's own receiver trusts it)."""
DEV_WEBHOOKS = {
    "DISPATCHER_WEBHOOK_ALLOW_LOOPBACK": "true",
    "DISPATCHER_WEBHOOK_RETRY_SCHEDULE": "0,1,2,5,10,20",
}
DEV_EASEMOB_CALLBACK_SECRET = "dev-easemob-callback-secret"
DEV_READ_AFTER = 2.0
"""Seconds after a delivery until the Easemob simulator says the message was read."""
DEV_CLIENT = "dev"
DEV_CHANNEL = "dev"
