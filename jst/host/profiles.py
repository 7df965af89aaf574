"""The host's update of ``rpc-info.json`` (§3.3), as a pure function over ``RpcInfo``.

Reading, locking and writing the file are ``store.py``'s; this module only decides what
the new document is, so every rule below is testable without a file.

The original's merge, with the fixes of §9.18:

* The pid fallback (step 2b) only matches a *temporary* entry (``install_id`` null).
  Otherwise a new host that reuses a dead host's pid adopts that profile, and its
  handshake then hands the dead profile's roots to a different install.
* Temporary entries of hosts that are gone and that hold no roots are pruned (the
  original keeps them forever). Entries with an install id are never pruned: they carry
  a user's roots, and the next host of that install adopts them.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from jst.rpcinfo import Browser, DownloadRoot, Profile, RpcInfo


@attrs.define
class HostRecord:
    """What one running host knows about itself; ``roots=None`` means "do not overwrite"."""

    pid: int
    port: int
    token: str
    started: int
    browser: Browser
    install_id: str | None = None
    roots: list[DownloadRoot] | None = None
    # Our own link-handler socket (``unix:<path>``), published as an extra profile key;
    # other readers ignore it, rewriters of the file keep it.
    link_address: str | None = None

    @property
    def extension_id(self) -> str | None:
        return self.browser.extension_id


def _matches_pid(profile: Profile, record: HostRecord) -> bool:
    if profile.pid != record.pid or profile.install_id is not None:
        return False
    return not (
        profile.extension_id is not None
        and record.extension_id is not None
        and profile.extension_id != record.extension_id
    )


def find_profile(info: RpcInfo, record: HostRecord) -> Profile | None:
    if record.install_id is not None:
        for profile in info.profiles:
            if profile.install_id == record.install_id:
                return profile
    for profile in info.profiles:
        if _matches_pid(profile, record):
            return profile
    return None


LINK_KEY = "jst_link"


def _new_profile(record: HostRecord) -> Profile:
    profile = Profile(
        pid=record.pid,
        port=record.port,
        token=record.token,
        started=record.started,
        last_used=record.started,
        browser=attrs.evolve(record.browser),
        download_roots=list(record.roots or []),
        extension_id=record.extension_id,
        install_id=record.install_id,
    )
    _set_link(profile, record)
    return profile


def _set_link(profile: Profile, record: HostRecord) -> None:
    if record.link_address is not None:
        profile.extra[LINK_KEY] = record.link_address
    else:
        profile.extra.pop(LINK_KEY, None)


def merge(
    info: RpcInfo,
    record: HostRecord,
    *,
    binary_exists: Callable[[str], bool],
    pid_alive: Callable[[int], bool],
) -> list[DownloadRoot]:
    """Update ``info`` in place for ``record``; return the record's resulting roots."""
    profile = find_profile(info, record)
    if profile is None:
        profile = _new_profile(record)
        info.profiles.append(profile)
    else:
        profile.pid = record.pid
        profile.port = record.port
        profile.token = record.token
        profile.started = record.started
        profile.last_used = record.started
        if record.browser.binary and binary_exists(record.browser.binary):
            profile.browser = attrs.evolve(record.browser, extra=profile.browser.extra)
        else:
            # A browser updated in place runs from "/opt/.../chrome (deleted)": keep the
            # binary we knew, which the link-handler can still launch.
            profile.browser.name = record.browser.name
            profile.browser.extension_id = record.browser.extension_id
        profile.extension_id = record.extension_id
        _set_link(profile, record)
        if record.install_id is not None:
            profile.install_id = record.install_id
        if record.roots is not None:
            profile.download_roots = list(record.roots)
            profile.unparsed_roots = []

    def keep(other: Profile) -> bool:
        if other is profile or other.install_id is not None:
            return True
        if other.pid == record.pid:
            # Step 3: a handshaken host's temporary startup entry is merged into ``profile``.
            return record.install_id is None
        return bool(other.download_roots or other.unparsed_roots) or pid_alive(other.pid)

    info.profiles = [p for p in info.profiles if keep(p)]
    return list(profile.download_roots)
