"""Basic accessibility checks of the UI's pages, written here (no axe-core: it needs npm).

:func:`page_problems` parses a page (the HTML the server sent, or the DOM the browser built)
and lists what fails: ``<html lang>`` missing; no ``<title>``; not exactly one ``h1``; a heading
level skipped (h1 → h3) or a first heading other than h1; a form control (``input`` other than
hidden/submit/button/reset, ``select``, ``textarea``) without a ``<label for>``, an enclosing
``<label>`` or ``aria-label``/``aria-labelledby``; an ``img`` (or ``input type=image``) without
``alt``; a link or button with no text; a duplicate ``id``.

Contrast (WCAG 2.x): :func:`contrast_ratio` of two sRGB colours; :func:`css_pair_problems`
checks every rule of a stylesheet that sets both ``color`` and ``background-color`` (where a
text colour sits on a background of another rule, only the browser knows:)
:data:`COMPUTED_TEXT_JS` collects, in a real
browser, every element that shows text with its computed colour and the first non-transparent
background behind it, and :func:`computed_contrast_problems` applies the AA thresholds (4.5:1,
3:1 for large text: 24 px, or 18.66 px bold).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

__all__ = [
    "COMPUTED_TEXT_JS",
    "computed_contrast_problems",
    "contrast_ratio",
    "css_pair_problems",
    "page_problems",
    "parse_color",
]

_CONTROLS = {"select", "textarea"}
_UNLABELLED_INPUTS = {"hidden", "submit", "button", "reset", "image"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.title = ""
        self.headings: list[int] = []
        self.label_for: set[str] = set()
        self.controls: list[tuple[str, dict[str, str], bool]] = []
        self.problems: list[str] = []
        self.ids: dict[str, int] = {}
        self._stack: list[str] = []
        self._in_label = 0
        self._in_title = False
        self._named: list[tuple[str, dict[str, str], list[str]]] = []

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: (v or "") for k, v in attrs_list}
        if "id" in attrs:
            self.ids[attrs["id"]] = self.ids.get(attrs["id"], 0) + 1
        if tag == "html":
            self.lang = attrs.get("lang", "").strip() or None
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        elif tag == "label":
            self._in_label += 1
            if attrs.get("for"):
                self.label_for.add(attrs["for"])
        elif tag == "img" and "alt" not in attrs:
            self.problems.append(f"img without alt: {attrs.get('src', '?')}")
        elif tag == "input":
            kind = attrs.get("type", "text").lower()
            if kind == "image" and "alt" not in attrs:
                self.problems.append("input type=image without alt")
            if kind not in _UNLABELLED_INPUTS:
                self.controls.append((tag, attrs, self._in_label > 0))
        elif tag in _CONTROLS:
            self.controls.append((tag, attrs, self._in_label > 0))
        if tag in ("a", "button"):
            self._named.append((tag, attrs, []))
        if tag not in ("meta", "link", "input", "br", "img", "hr"):
            self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "label":
            self._in_label = max(0, self._in_label - 1)
        if tag in ("a", "button") and self._named:
            kind, attrs, text = self._named.pop()
            name = "".join(text).strip() or attrs.get("aria-label", "").strip()
            if not name:
                self.problems.append(f"{kind} without text: {attrs.get('href', '')}")
        if tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        for _, _, text in self._named:
            text.append(data)


def page_problems(html: str) -> list[str]:
    """What fails on this page (see the module docstring); empty when it passes."""
    p = _Page()
    p.feed(html)
    p.close()
    problems = list(p.problems)
    if not p.lang:
        problems.append("<html> has no lang attribute")
    if not p.title.strip():
        problems.append("no <title>")
    ones = p.headings.count(1)
    if ones != 1:
        problems.append(f"{ones} h1 elements (want exactly one)")
    if p.headings and p.headings[0] != 1:
        problems.append(f"first heading is h{p.headings[0]}")
    for before, after in zip(p.headings, p.headings[1:], strict=False):
        if after > before + 1:
            problems.append(f"heading level skipped: h{before} then h{after}")
    for tag, attrs, wrapped in p.controls:
        labelled = (
            wrapped
            or (attrs.get("id") and attrs["id"] in p.label_for)
            or attrs.get("aria-label", "").strip()
            or attrs.get("aria-labelledby", "").strip()
        )
        if not labelled:
            problems.append(f"{tag} without a label: name={attrs.get('name', '?')}")
    for ident, count in p.ids.items():
        if count > 1:
            problems.append(f"duplicate id {ident!r}")
    return problems


# -- contrast -------------------------------------------------------------------------------------
def parse_color(text: str) -> tuple[float, float, float, float] | None:
    """``#rgb``, ``#rrggbb``, ``rgb(r, g, b)``, ``rgba(r, g, b, a)``, ``white``, ``black``,
    ``transparent`` → (r, g, b, alpha); None for anything else."""
    t = text.strip().lower()
    named = {
        "white": (255.0, 255.0, 255.0, 1.0),
        "black": (0.0, 0.0, 0.0, 1.0),
        "transparent": (0.0, 0.0, 0.0, 0.0),
    }
    if t in named:
        return named[t]
    if re.fullmatch(r"#[0-9a-f]{3}", t):
        return (*(int(c * 2, 16) * 1.0 for c in t[1:]), 1.0)  # type: ignore[return-value]
    if re.fullmatch(r"#[0-9a-f]{6}", t):
        return (*(int(t[i : i + 2], 16) * 1.0 for i in (1, 3, 5)), 1.0)  # type: ignore[return-value]
    m = re.fullmatch(r"rgba?\(([^)]*)\)", t)
    if m:
        parts = [x.strip() for x in m.group(1).replace("/", ",").split(",")]
        if len(parts) >= 3:
            r, g, b = (float(x) for x in parts[:3])
            a = float(parts[3]) if len(parts) > 3 else 1.0
            return r, g, b, a
    return None


def _luminance(rgb: tuple[float, float, float, float]) -> float:
    def channel(c: float) -> float:
        c = c / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(x) for x in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two opaque colours (1.0 .. 21.0). Raises ValueError."""
    a, b = parse_color(fg), parse_color(bg)
    if a is None or b is None:
        raise ValueError(f"cannot parse {fg!r} or {bg!r}")
    la, lb = _luminance(a), _luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def _rules(css: str) -> list[tuple[str, dict[str, str]]]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    out = []
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        decls = {}
        for decl in body.split(";"):
            if ":" in decl:
                k, v = decl.split(":", 1)
                decls[k.strip().lower()] = v.strip()
        out.append((" ".join(selector.split()), decls))
    return out


def css_pair_problems(css: str, minimum: float = 4.5) -> list[str]:
    """Rules whose text colour has too little contrast with the background they set."""
    problems = []
    for selector, decls in _rules(css):
        color = decls.get("color")
        if color is None or parse_color(color) is None:
            continue
        bg = decls.get("background-color")
        if bg is None or parse_color(bg) is None or parse_color(bg)[3] == 0:
            continue
        ratio = contrast_ratio(color, bg)
        if ratio < minimum:
            problems.append(f"{selector}: {color} on {bg} is {ratio:.2f}:1")
    return problems


COMPUTED_TEXT_JS = r"""
const out = [];
function bgOf(el) {
  for (let e = el; e; e = e.parentElement) {
    const c = getComputedStyle(e).backgroundColor;
    const m = c.match(/rgba?\(([^)]*)\)/);
    if (m) {
      const p = m[1].split(',').map(x => parseFloat(x));
      if (p.length < 4 || p[3] > 0) return c;
    }
  }
  return 'rgb(255, 255, 255)';
}
for (const el of document.querySelectorAll('body *')) {
  const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.getClientRects().length === 0) continue;
  const cs = getComputedStyle(el);
  if (cs.visibility === 'hidden' || cs.display === 'none') continue;
  out.push({tag: el.tagName.toLowerCase(), cls: el.className || '', text: el.textContent.trim().slice(0, 40),
            color: cs.color, bg: bgOf(el), size: parseFloat(cs.fontSize), weight: parseInt(cs.fontWeight, 10)});
}
return out;
"""


def computed_contrast_problems(items: list[dict[str, Any]]) -> list[str]:
    """Apply WCAG AA to what :data:`COMPUTED_TEXT_JS` returned."""
    problems = []
    for item in items:
        large = item["size"] >= 24 or (item["size"] >= 18.66 and item["weight"] >= 700)
        need = 3.0 if large else 4.5
        ratio = contrast_ratio(item["color"], item["bg"])
        if ratio < need:
            problems.append(
                f"<{item['tag']} class={item['cls']!r}> {item['text']!r}: {item['color']} on "
                f"{item['bg']} is {ratio:.2f}:1 (need {need})"
            )
    return problems
