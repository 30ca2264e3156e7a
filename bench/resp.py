"""RESP for the bench scripts that talk to Redis themselves (bench/hostile, bench/lua_cost)."""


def encode(*args):
    """One command as RESP: an array of bulk strings (str and int are sent as their text)."""
    out = [b"*%d\r\n" % len(args)]
    for x in args:
        x = x if isinstance(x, bytes) else str(x).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(x), x))
    return b"".join(out)


def reply(f):
    """The next reply read from `f` (a binary file, e.g. socket.makefile("rb")): simple strings and
    bulk strings as str, integers as int, nil as None, arrays as lists; an error reply raises
    RuntimeError."""
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [reply(f) for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")
