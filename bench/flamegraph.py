#!/usr/bin/env python3
"""Flame graphs from `perf script` output: fold the stacks, render a self-contained SVG.

  perf record -F 999 --call-graph dwarf -p PID -o perf.data -- sleep 5
  perf script -i perf.data -F comm,tid,period,event,ip,sym,dso --no-inline > out.perf-script.txt
  bench/flamegraph.py out.perf-script.txt --svg out.svg --folded out.folded.gz --top 15

  bench/flamegraph.py stacks.folded.gz --svg out.svg   # re-render folded stacks
  bench/flamegraph.py --self-test

Folding is that of Brendan Gregg's stackcollapse-perf.pl: one line per distinct stack, frames root
to leaf joined by ';', then the number of samples. The first frame is the thread's name, kernel
frames end in `_[k]`, a frame without a symbol is `[its dso]`. Unlike stackcollapse-perf.pl,
function names are kept whole (no argument lists are cut off: `operator()` stays). The folded
file is readable by flamegraph.pl too.

The SVG: width of a frame ∝ its samples (its own and its callees'), the root at the bottom, callees
above their caller, siblings in alphabetical order (the x axis is not time). Labels shorten C++
templates (`<…>`) and are cut to fit; the tooltip (<title>) has the full name, the samples and
their share. Colours say where the code comes from (legend on top). Click a frame to zoom into
it, click "Reset zoom" to come back; "Search" highlights frames matching a regular expression and
gives their share of the samples. Standard library only.
"""
import argparse
import collections
import gzip
import html
import io
import os
import re
import sys
import zlib

# ---------------------------------------------------------------------------- folding

HEADER = re.compile(r"^(\S.*?)\s+(\d+)(?:/(\d+))?\s")   # comm  pid[/tid]  ...


def frame_name(sym, dso):
    """The folded name of one frame: the symbol, `_[k]` for the kernel, `[dso]` if unknown."""
    dso = dso.strip()
    base = os.path.basename(dso.strip("[]")) if dso else ""
    if sym.startswith("[unknown]") or not sym:
        sym = f"[{base or 'unknown'}]"
    else:
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)   # when perf script printed symoff
    sym = sym.replace(";", ":")                       # ';' separates frames
    if dso.startswith("[kernel") or dso.startswith("[guest.kernel"):
        sym += "_[k]"
    return sym


def fold_perf_script(lines, dsos=None):
    """perf script text -> Counter {'comm;root;...;leaf': samples}. dsos (a dict) learns the dso
    of each frame name, for the colours."""
    stacks = collections.Counter()
    comm, frames = None, []

    def flush():
        if comm is not None:
            name = comm.replace(";", ":").replace(" ", "_")
            stacks[";".join([name] + frames[::-1])] += 1

    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if not line[0].isspace():
            flush()
            m = HEADER.match(line)
            comm, frames = (m.group(1) if m else line.split()[0]), []
            continue
        if comm is None:
            continue
        body = line.strip()
        # "ADDR SYM (DSO)": SYM may contain spaces and parentheses, DSO is the last "(...)".
        addr, _, rest = body.partition(" ")
        sym, dso = rest, ""
        if rest.endswith(")"):
            cut = rest.rfind(" (")
            if cut >= 0:
                sym, dso = rest[:cut], rest[cut + 2:-1]
            elif rest.startswith("("):
                sym, dso = "", rest[1:-1]
        name = frame_name(sym.strip(), dso)
        if dsos is not None and dso:
            dsos.setdefault(name, dso)
        frames.append(name)
    flush()
    return stacks


def read_folded(lines):
    stacks = collections.Counter()
    for line in lines:
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        stack, _, count = line.rpartition(" ")
        try:
            stacks[stack] += int(float(count))
        except ValueError:
            continue
    return stacks


def write_folded(stacks, path):
    text = "".join(f"{s} {n}\n" for s, n in sorted(stacks.items()))
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt") as f:
        f.write(text)


# ---------------------------------------------------------------------------- names, colours

def collapse(name, open_ch, close_ch, keep_empty):
    """Replaces each outermost open_ch…close_ch group by open_ch…close_ch ("<…>")."""
    out, depth, i = [], 0, 0
    while i < len(name):
        c = name[i]
        if depth == 0 and open_ch == "<" and c in "<>-=":
            # operator<, operator<<, operator->, operator>=: not template brackets
            m = re.match(r"(<<=|>>=|<=>|<<|>>|<=|>=|->\*|->|<|>)", name[i:])
            if m and "".join(out).endswith("operator"):
                out.append(m.group(1))
                i += len(m.group(1))
                continue
        if c == open_ch:
            if depth == 0:
                close = name.find(close_ch, i)
                if keep_empty and close == i + 1:
                    out.append(open_ch + close_ch)
                    i += 2
                    continue
                out.append(open_ch + "…")
            depth += 1
        elif c == close_ch and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(close_ch)
        elif depth == 0:
            out.append(c)
        i += 1
    return "".join(out)


def short_name(name):
    """A label for a frame: templates and argument lists shortened, the full name is the tooltip."""
    if name.endswith("_[k]"):
        name = name[:-4]
    s = name.replace("(anonymous namespace)", "(anon)")
    s = re.sub(r" \[clone [^\]]*\]", "", s)
    s = re.sub(r"@@?GLIBC_[0-9.]+$", "", s)
    s = s.replace("std::__cxx11::", "std::").replace("std::__1::", "std::")
    s = re.sub(r"\{lambda\([^{}]*?\)#(\d+)\}", r"{lambda#\1}", s)
    s = collapse(s, "<", ">", keep_empty=True)
    s = s.replace("(anon)", "\0anon\0")
    s = collapse(s, "(", ")", keep_empty=True)
    s = s.replace("\0anon\0", "(anon)")
    s = s.replace("boost::asio::", "asio::").replace("boost::beast::", "beast::")
    return s


# Category: (legend label, hue, saturation range, lightness range)
CATEGORIES = {
    "ifm": ("ifm:: (our code)", 120, (45, 60), (40, 58)),
    "beast": ("boost::beast / asio", 210, (55, 75), (55, 72)),
    "boost": ("other boost", 250, (35, 55), (62, 75)),
    "std": ("std:: / libstdc++", 50, (70, 85), (50, 62)),
    "libc": ("libc / malloc", 0, (60, 75), (58, 70)),
    "hiredis": ("hiredis", 285, (40, 60), (55, 70)),
    "openssl": ("openssl", 175, (55, 70), (42, 55)),
    "kernel": ("kernel", 28, (80, 95), (50, 62)),
    "other": ("other / unknown", 0, (0, 0), (65, 78)),
}
ROOT_COLOUR = "rgb(200,200,200)"


def category(name, dso=""):
    base = os.path.basename(dso.strip("[]")) if dso else ""
    if name.endswith("_[k]") or base in ("kernel.kallsyms", "vdso") or name.startswith("__vdso_"):
        return "kernel"
    if base.startswith("libhiredis") or re.match(r"(redis|sds|__redis)[A-Za-z_]", name):
        return "hiredis"
    if base.startswith(("libcrypto", "libssl")) or re.match(r"(SHA\d|sha\d|EVP_|OPENSSL_|CRYPTO_|ossl_|SSL_)", name):
        return "openssl"
    if base.startswith(("libc.so", "libc-", "ld-linux", "libm.so", "libpthread")) or \
            name in ("malloc", "free", "cfree", "realloc", "calloc") or name.startswith(("_int_", "__libc_", "__memmove", "__memcpy", "__memset", "__strlen")):
        return "libc"
    if base.startswith("libstdc++") or base.startswith("libgcc"):
        return "std"
    s = name.replace("(anonymous namespace)::", "")
    for prefix, cat in (("ifm::", "ifm"), ("boost::beast::", "beast"), ("boost::asio::", "beast"),
                        ("boost::", "boost"), ("std::", "std"), ("__gnu_cxx::", "std"), ("void std::", "std")):
        if s.startswith(prefix):
            return cat
    if name.startswith("(anonymous namespace)::") and ("ifmatch" in base or not base):
        return "ifm"
    return "other"


def colour(name, cat):
    _, hue, sat, light = CATEGORIES[cat]
    h = zlib.crc32(name.encode())
    v1, v2 = (h & 0xFFFF) / 0xFFFF, (h >> 16) / 0xFFFF
    s = sat[0] + (sat[1] - sat[0]) * v1
    l = light[0] + (light[1] - light[0]) * v2
    return f"hsl({hue + (v1 - 0.5) * 16:.0f},{s:.0f}%,{l:.0f}%)"


# ---------------------------------------------------------------------------- rendering

class Node:
    __slots__ = ("name", "count", "children")

    def __init__(self, name):
        self.name, self.count, self.children = name, 0, {}


def build_tree(stacks):
    root = Node("all")
    for stack, n in stacks.items():
        root.count += n
        node = root
        for frame in stack.split(";"):
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = Node(frame)
            child.count += n
            node = child
    return root


SCRIPT = r"""
var svg = document.documentElement, W = %(width)d, XPAD = %(xpad)d, CW = %(cw).3f, TOTAL = %(total)d;
var frames = Array.prototype.slice.call(document.querySelectorAll('g.f'));
var details = document.getElementById('details'), matched = document.getElementById('matched');
var unzoom = document.getElementById('unzoom');
frames.forEach(function (g) {
  var r = g.firstElementChild.nextElementSibling;
  g.ox = +r.getAttribute('x'); g.ow = +r.getAttribute('width'); g.oy = +r.getAttribute('y');
  g.addEventListener('click', function () { zoom(g); });
  g.addEventListener('mouseover', function () { details.textContent = g.firstElementChild.textContent; });
  g.addEventListener('mouseout', function () { details.textContent = ' '; });
});
function label(g) { var t = g.lastElementChild; return g.getAttribute('data-l') || t.textContent; }
function place(g, x, w) {
  var r = g.firstElementChild.nextElementSibling, t = g.lastElementChild, l = label(g);
  if (!g.hasAttribute('data-l')) g.setAttribute('data-l', l);
  r.setAttribute('x', x); r.setAttribute('width', w); t.setAttribute('x', x + 3);
  var n = Math.floor((w - 6) / CW);
  t.textContent = n < 3 ? '' : (l.length <= n ? l : l.slice(0, n - 2) + '..');
  g.style.display = '';
}
function zoom(z) {
  var x0 = z.ox, w0 = z.ow, s = (W - 2 * XPAD) / w0, e = 1e-6;
  frames.forEach(function (g) {
    if (g.oy > z.oy) {  // nearer the root
      if (g.ox <= x0 + e && g.ox + g.ow >= x0 + w0 - e) place(g, XPAD, W - 2 * XPAD);
      else g.style.display = 'none';
    } else if (g.ox >= x0 - e && g.ox + g.ow <= x0 + w0 + e) place(g, XPAD + (g.ox - x0) * s, g.ow * s);
    else g.style.display = 'none';
  });
  unzoom.style.opacity = 1;
}
unzoom.addEventListener('click', function () {
  frames.forEach(function (g) { place(g, g.ox, g.ow); });
  unzoom.style.opacity = 0;
});
document.getElementById('search').addEventListener('click', function () {
  var q = prompt('Search (regular expression), empty to clear:', '');
  if (q === null) return;
  var re = q ? new RegExp(q) : null, spans = [];
  frames.forEach(function (g) {
    var r = g.firstElementChild.nextElementSibling;
    if (!r.hasAttribute('data-fill')) r.setAttribute('data-fill', r.getAttribute('fill'));
    var hit = re && re.test(g.firstElementChild.textContent);
    r.setAttribute('fill', hit ? 'rgb(230,0,230)' : r.getAttribute('data-fill'));
    if (hit) spans.push([g.ox, g.ox + g.ow]);
  });
  spans.sort(function (a, b) { return a[0] - b[0]; });
  var sum = 0, end = -1;
  spans.forEach(function (s) { if (s[0] >= end) { sum += s[1] - s[0]; end = s[1]; } else if (s[1] > end) { sum += s[1] - end; end = s[1]; } });
  matched.textContent = re ? 'Matched: ' + (100 * sum / (W - 2 * XPAD)).toFixed(1) + '%%' : ' ';
});
"""


def esc(s):
    return html.escape(s, quote=True)


def render_svg(stacks, dsos=None, title="Flame graph", subtitle="", width=1200, frame_height=16,
               font_size=11, min_width=0.1):
    dsos = dsos or {}
    root = build_tree(stacks)
    total = root.count
    xpad, top, bottom = 10, 56 + (14 if subtitle else 0), 30
    cw = font_size * 0.59
    scale = (width - 2 * xpad) / total if total else 0

    # Lay out: (depth, x, node), root at depth 0; narrower than min_width pixels: left out.
    placed, depth_max = [], 0
    todo = [(root, 0, 0.0)]
    while todo:
        node, depth, x = todo.pop()
        w = node.count * scale
        if w < min_width:
            continue
        placed.append((depth, x, w, node))
        depth_max = max(depth_max, depth)
        cx = x
        for name in sorted(node.children):
            child = node.children[name]
            todo.append((child, depth + 1, cx))
            cx += child.count * scale
    height = top + (depth_max + 1) * frame_height + bottom

    out = io.StringIO()
    w = out.write
    w('<?xml version="1.0" standalone="no"?>\n')
    w(f'<svg version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
      f'xmlns="http://www.w3.org/2000/svg" font-family="Verdana, sans-serif" font-size="{font_size}">\n')
    w('<style>g.f:hover rect { stroke: black; stroke-width: 0.5; cursor: pointer; } '
      'text { dominant-baseline: auto; } .t { font-size: 17px; text-anchor: middle; } '
      '.b { cursor: pointer; fill: #333; } g.f text { pointer-events: none; }</style>\n')
    w(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f8f8f4"/>\n')
    w(f'<text class="t" x="{width / 2}" y="22">{esc(title)}</text>\n')
    y = 38
    if subtitle:
        w(f'<text x="{width / 2}" y="{y}" text-anchor="middle" fill="#555">{esc(subtitle)}</text>\n')
        y += 14
    # Legend.
    lx = xpad
    for cat, (label, *_rest) in CATEGORIES.items():
        w(f'<rect x="{lx}" y="{y}" width="10" height="10" fill="{colour(label, cat)}"/>'
          f'<text x="{lx + 13}" y="{y + 9}" font-size="10">{esc(label)}</text>\n')
        lx += 13 + len(label) * 6.2 + 14
    w(f'<text id="unzoom" class="b" x="{xpad}" y="22" opacity="0">Reset zoom</text>\n')
    w(f'<text id="search" class="b" x="{width - xpad}" y="22" text-anchor="end">Search</text>\n')
    w(f'<text id="matched" x="{width - xpad}" y="{height - 10}" text-anchor="end"> </text>\n')
    w(f'<text id="details" x="{xpad}" y="{height - 10}"> </text>\n')

    base_y = height - bottom - frame_height
    for depth, x, fw, node in placed:
        name = node.name
        if depth == 0:
            fill, full = ROOT_COLOUR, "all"
        elif depth == 1:
            fill, full = ROOT_COLOUR, f"thread {name}"
        else:
            fill, full = colour(name, category(name, dsos.get(name, ""))), name
        pct = 100.0 * node.count / total
        tip = f"{full} ({node.count:,} samples, {pct:.2f}%)"
        label = "all" if depth == 0 else short_name(name)
        n = int((fw - 6) / cw)
        text = "" if n < 3 else (label if len(label) <= n else label[:n - 2] + "..")
        fy = base_y - depth * frame_height
        extra = f' data-l="{esc(label)}"' if text != label else ""
        w(f'<g class="f"{extra}><title>{esc(tip)}</title>'
          f'<rect x="{x:.1f}" y="{fy}" width="{fw:.1f}" height="{frame_height - 1}" fill="{fill}" rx="2"/>'
          f'<text x="{x + 3:.1f}" y="{fy + frame_height - 5}">{esc(text)}</text></g>\n')
    w("<script><![CDATA[" + SCRIPT % {"width": width, "xpad": xpad, "cw": cw, "total": total} + "]]></script>\n")
    w("</svg>\n")
    return out.getvalue()


# ---------------------------------------------------------------------------- self time

def self_time(stacks, dsos=None, n=15):
    """(lines of text): the n functions with most samples as the leaf frame (templates merged by
    their short name), and self time per category."""
    dsos = dsos or {}
    total = sum(stacks.values())
    leaves, cats = collections.Counter(), collections.Counter()
    for stack, c in stacks.items():
        leaf = stack.rsplit(";", 1)[-1]
        cat = category(leaf, dsos.get(leaf, ""))
        leaves[(short_name(leaf), cat)] += c
        cats[cat] += c
    lines = [f"{total:,} samples; self time (samples whose leaf frame is the function), top {n}:"]
    for (name, cat), c in leaves.most_common(n):
        lines.append(f"{100.0 * c / max(total, 1):6.2f}%  {c:6d}  {cat:<8} {name}")
    lines.append("self time by origin: " + ", ".join(
        f"{CATEGORIES[cat][0]} {100.0 * c / max(total, 1):.1f}%" for cat, c in cats.most_common()))
    return lines


# ---------------------------------------------------------------------------- self-test

SAMPLE = """\
ifmatch-proxy 100   1001001 cpu-clock:ppp: \n\
\tffffffff81000001 _raw_spin_unlock_irqrestore ([kernel.kallsyms])
\tffffffff81000002 tcp_sendmsg ([kernel.kallsyms])
\t           1234 __libc_sendmsg (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t           5678 ifm::proxy::session::write(std::vector<int, std::allocator<int> > const&) (/b/ifmatch-proxy)
\t           9abc boost::asio::detail::executor_op<boost::asio::detail::binder0<ifm::proxy::X<int> >, std::allocator<void> >::do_complete (/b/ifmatch-proxy)
\t           def0 main (/b/ifmatch-proxy)

ifmatch-proxy 100   1001001 cpu-clock:ppp: \n\
\t           1111 _int_malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t           1112 malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t           5679 ifm::proxy::session::write(std::vector<int, std::allocator<int> > const&) (/b/ifmatch-proxy)
\t           9abc boost::asio::detail::executor_op<boost::asio::detail::binder0<ifm::proxy::X<int> >, std::allocator<void> >::do_complete (/b/ifmatch-proxy)
\t           def0 main (/b/ifmatch-proxy)

ifmatch-proxy 100   1001001 cpu-clock:ppp: \n\
\t           1111 _int_malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t           1112 malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t           5679 ifm::proxy::session::write(std::vector<int, std::allocator<int> > const&) (/b/ifmatch-proxy)
\t           9abc boost::asio::detail::executor_op<boost::asio::detail::binder0<ifm::proxy::X<int> >, std::allocator<void> >::do_complete (/b/ifmatch-proxy)
\t           def0 main (/b/ifmatch-proxy)

redis worker 101/101   1001001 cpu-clock:ppp: \n\
\t           4444 [unknown] (/usr/lib/x86_64-linux-gnu/libhiredis.so.0.14)
\t           5555 (anonymous namespace)::on_reply(redisAsyncContext*, void*, void*)::{lambda(auto:1&&)#1}::operator() (/b/ifmatch-proxy)
\t           6666 start_thread; (/usr/lib/x86_64-linux-gnu/libc.so.6)
"""


def self_test():
    dsos = {}
    stacks = fold_perf_script(io.StringIO(SAMPLE), dsos)
    write = "ifm::proxy::session::write(std::vector<int, std::allocator<int> > const&)"
    op = ("boost::asio::detail::executor_op<boost::asio::detail::binder0<ifm::proxy::X<int> >,"
          " std::allocator<void> >::do_complete")
    want = {
        f"ifmatch-proxy;main;{op};{write};__libc_sendmsg;tcp_sendmsg_[k];_raw_spin_unlock_irqrestore_[k]": 1,
        f"ifmatch-proxy;main;{op};{write};malloc;_int_malloc": 2,
        "redis_worker;start_thread:;(anonymous namespace)::on_reply(redisAsyncContext*, void*, void*)::"
        "{lambda(auto:1&&)#1}::operator();[libhiredis.so.0.14]": 1,
    }
    assert dict(stacks) == want, dict(stacks)
    assert category("[libhiredis.so.0.14]", dsos["[libhiredis.so.0.14]"]) == "hiredis"
    assert category(op) == "beast" and category(write) == "ifm" and category("tcp_sendmsg_[k]") == "kernel"
    assert category("_int_malloc", dsos["_int_malloc"]) == "libc"
    shorts = {
        op: "asio::detail::executor_op<…>::do_complete",
        write: "ifm::proxy::session::write(…)",
        "std::vector<std::__cxx11::basic_string<char>, std::allocator<int> >::~vector": "std::vector<…>::~vector",
        "bool std::operator< <char>(a, b)": "bool std::operator< <…>(…)",
        "ifm::Foo::operator()": "ifm::Foo::operator()",
        "ifm::x::operator<<(std::ostream&, ifm::y const&)": "ifm::x::operator<<(…)",
        "ifm::a::b()::{lambda(int, std::pair<int, int>)#2}::operator()": "ifm::a::b()::{lambda#2}::operator()",
        "(anonymous namespace)::f(int)": "(anon)::f(…)",
        "malloc_consolidate [clone .constprop.0]": "malloc_consolidate",
        "tcp_ack_[k]": "tcp_ack",
        "cfree@GLIBC_2.2.5": "cfree",
    }
    for full, short in shorts.items():
        got = short_name(full)
        assert got == short, (full, got, short)
    # Round trip through a folded file, then render and parse the SVG.
    import tempfile
    import xml.etree.ElementTree as ET
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.folded.gz")
        write_folded(stacks, path)
        with gzip.open(path, "rt") as f:
            assert read_folded(f) == stacks
    svg = render_svg(stacks, dsos, title="self-test", subtitle="4 samples")
    tree = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    groups = tree.findall(f"{ns}g")
    titles = [g.find(f"{ns}title").text for g in groups]
    assert "all (4 samples, 100.00%)" in titles, titles
    assert any(t.startswith(write) and "(3 samples, 75.00%)" in t for t in titles), titles
    assert any(t.startswith("_int_malloc (2 samples, 50.00%)") for t in titles), titles
    top = self_time(stacks, dsos, 3)
    assert "50.00%" in top[1] and "_int_malloc" in top[1], top
    print("flamegraph.py self-test: ok")


# ---------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", nargs="?", help="perf script output, or folded stacks (*.folded[.gz]); - for stdin")
    ap.add_argument("--svg", help="write the flame graph here")
    ap.add_argument("--folded", help="write the folded stacks here (gzip if it ends in .gz)")
    ap.add_argument("--title", default="Flame graph")
    ap.add_argument("--subtitle", default="")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--min-width", type=float, default=0.1, help="leave out frames narrower (pixels)")
    ap.add_argument("--max-bytes", type=int, default=0, help="raise --min-width until the SVG is that small")
    ap.add_argument("--top", type=int, default=0, help="print the N functions with most self time")
    ap.add_argument("--top-out", help="and write that list to this file")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.input:
        ap.error("an input is needed (or --self-test)")
    dsos = {}
    name = args.input
    if name == "-":
        f = sys.stdin
    elif name.endswith(".gz"):
        f = gzip.open(name, "rt", errors="replace")
    else:
        f = open(name, errors="replace")
    with f:
        stacks = read_folded(f) if ".folded" in os.path.basename(name) else fold_perf_script(f, dsos)
    if not stacks:
        sys.exit(f"flamegraph.py: no samples in {name}")
    if args.folded:
        write_folded(stacks, args.folded)
    if args.svg:
        min_width = args.min_width
        svg = render_svg(stacks, dsos, args.title, args.subtitle, args.width, min_width=min_width)
        while args.max_bytes and len(svg.encode()) > args.max_bytes and min_width < 8:
            min_width *= 1.5   # leave out more of the narrowest frames until the file fits
            svg = render_svg(stacks, dsos, args.title, args.subtitle, args.width, min_width=min_width)
        if min_width != args.min_width:
            print(f"(frames narrower than {min_width:.2f} px left out: the SVG within {args.max_bytes:,} bytes)")
        with open(args.svg, "w") as out:
            out.write(svg)
    if args.top:
        lines = self_time(stacks, dsos, args.top)
        print("\n".join(lines))
        if args.top_out:
            with open(args.top_out, "w") as out:
                if args.subtitle:
                    out.write(f"# {args.title}: {args.subtitle}\n")
                out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
