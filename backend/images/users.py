"""An image's ``USER`` resolved to the numeric uid and gid the engine would run it as.

The rules are runc's (``github.com/moby/sys/user.GetExecUser``), so every spelling the engine
accepts resolves here to the same numbers: ``user[:group]`` split at the first ``:``; a part
that parses as a decimal integer (``0``, ``00``, ``+0``) is an id, never a name; a name is
looked up in the image's own ``/etc/passwd`` (first match wins) and ``/etc/group``; an empty
user part means uid 0; without a group the gid is the passwd entry's (or 0). Checking the
numbers, not the string, is what keeps root out under any spelling.

Used at upload (on the passwd/group found in the tarball's layers) and by the worker (on the
loaded image's files), which then passes ``uid:gid`` to the engine so it never resolves names.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ID = 2**31 - 1


class UserError(Exception):
    """The USER cannot run: the message says why and how to fix the Dockerfile."""


@dataclass(frozen=True)
class Resolved:
    uid: int
    gid: int

    @property
    def spec(self) -> str:
        return f"{self.uid}:{self.gid}"


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: optional sign, decimal digits only (no spaces, no underscores)."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    return int(text)


def _entries(text: str | None, fields: int) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        parts = line.split(":")
        rows.append(parts + [""] * (fields - len(parts)))
    return rows


def needs_files(spec: str) -> bool:
    """Whether resolving ``spec`` reads the image's passwd/group (not for numeric uid:gid)."""
    user_part, _, group_part = spec.partition(":")
    return _atoi(user_part) is None or _atoi(group_part.split(":", 1)[0]) is None


def resolve_user(spec: str, passwd: str | None, group: str | None) -> Resolved:
    """``spec`` (the image config's User) as numbers; ``passwd``/``group``: the image's
    files, None when absent or unreadable. Raises UserError when the engine could not run it."""
    user_part, _, group_part = spec.partition(":")
    group_part = group_part.split(":", 1)[0]
    uid_arg, gid_arg = _atoi(user_part), _atoi(group_part)
    uid, gid = 0, 0
    matched = False
    if user_part:
        for row in _entries(passwd, 7):
            # The engine reads a number it cannot parse as 0 ("evil:x:abc:…" is uid 0).
            row_uid, row_gid = _atoi(row[2]) or 0, _atoi(row[3]) or 0
            if (uid_arg is not None and row_uid == uid_arg) or \
                    (uid_arg is None and row[0] == user_part):
                uid, gid, matched = row_uid, row_gid, True
                break
        if not matched:
            if uid_arg is None:
                where = "the image's /etc/passwd" if passwd is not None \
                    else "the image (it has no readable /etc/passwd)"
                raise UserError(f"USER {spec}: there is no user {user_part!r} in {where}, so "
                                "the container could not start. Use a numeric USER such as "
                                "`USER 1000:1000`, or create the user in the Dockerfile.")
            uid = uid_arg
    if group_part:
        found = None
        for row in _entries(group, 4):
            row_gid = _atoi(row[2]) or 0
            if (gid_arg is not None and row_gid == gid_arg) or \
                    (gid_arg is None and row[0] == group_part):
                found = row_gid
                break
        if found is None and gid_arg is None:
            raise UserError(f"USER {spec}: there is no group {group_part!r} in the image's "
                            "/etc/group, so the container could not start. Use a numeric "
                            "group such as `USER 1000:1000`.")
        gid = found if found is not None else int(gid_arg or 0)
    for what, value in (("uid", uid), ("gid", gid)):
        if not 0 <= value <= MAX_ID:
            raise UserError(f"USER {spec}: {what} {value} is out of range (0 to {MAX_ID}).")
    return Resolved(uid, gid)


def refuse_root(spec: str, resolved: Resolved, fix: str) -> None:
    """UserError when ``spec`` runs as uid 0 (gid 0 alone is allowed: it grants nothing the
    sandbox's dropped capabilities and read-only root filesystem do not already take away)."""
    if resolved.uid != 0:
        return
    name = spec.partition(":")[0]
    if not name:
        why = f"USER {spec!r} has no user part, which means uid 0"
    elif _atoi(name) is None and name != "root":
        why = f"USER {spec} is uid 0 in the image's own /etc/passwd"
    else:
        why = f"USER {spec} is uid 0"
    raise UserError(f"The image runs as root: {why}. " + fix)
