"""BMCs for the deploy tests without a network: sushy-tools' Redfish emulator (its fake
driver) served to sushy through a requests adapter that calls the emulator's WSGI app."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests
import requests.adapters


class WsgiAdapter(requests.adapters.BaseAdapter):
    """requests' transport, answered by a Flask app's test client: no socket at all."""

    def __init__(self, app) -> None:
        super().__init__()
        self.client = app.test_client()
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        parts = urlsplit(request.url)
        answer = self.client.open(parts.path + (f"?{parts.query}" if parts.query else ""),
                                  method=request.method, data=request.body,
                                  headers=dict(request.headers))
        out = requests.Response()
        out.status_code = answer.status_code
        out.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        out._content = answer.get_data()
        out.url, out.request, out.encoding = request.url, request, "utf-8"
        return out

    def close(self) -> None:
        pass


def emulator(state_dir: str, systems: list[dict], auth_file: str | None = None):
    """sushy-tools' emulator app with the fake driver holding `systems`."""
    from sushy_tools.emulator import main

    config = {"SUSHY_EMULATOR_FAKE_DRIVER": True, "SUSHY_EMULATOR_STATE_DIR": state_dir,
              "SUSHY_EMULATOR_FAKE_SYSTEMS": systems}
    if auth_file:
        config["SUSHY_EMULATOR_AUTH_FILE"] = auth_file
    main.app.configure(extra_config=config)
    return main.app


def connector(app, base_url: str, verify: bool = True):
    """A sushy Connector whose requests go to `app`."""
    import sushy

    conn = sushy.connector.Connector(base_url, verify=verify)
    adapter = WsgiAdapter(app)
    conn._session.mount("http://", adapter)
    conn._session.mount("https://", adapter)
    return conn, adapter
