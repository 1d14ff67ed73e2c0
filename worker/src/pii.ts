// The PII guard, as src/edgemetrics/pii.py applies it: the patterns come from pii.json
// (written by `python -m edgemetrics.pii`), the policy per field from the "x-pii" key of
// each field's JSON Schema in layout.json. Ids and labels refuse an email, phone number,
// IP address, query-string URL or raw User-Agent (rule pii_*); route, fingerprint and
// referrer_source are stripped of them instead.
import rules from "./pii.json";

const EMAIL = new RegExp(rules.email, "g");
const URL_RE = new RegExp(rules.url, "g");
const IPV4 = new RegExp(rules.ipv4, "g");
const IPV6 = new RegExp(rules.ipv6_candidate, "g");
const PHONE = new RegExp(rules.phone, "g");
const USER_AGENT = new RegExp(rules.user_agent, "gs");
const SCHEME = /^[A-Za-z][A-Za-z0-9+.\-]*:\/\//;
const QUERY_OR_FRAGMENT = /[?#]/;
const MESSAGES = rules.messages as Record<string, string>;
const PLACEHOLDERS = rules.placeholders as Record<string, string>;

type Found = [start: number, end: number, rule: string];

function isIPv6(text: string): boolean {
  if ((text.match(/:/g) ?? []).length < 2 || text.replace(/:/g, "") === "") return false;
  try {
    // The URL parser validates IPv6 literals exactly (as Python's ipaddress does).
    new URL(`http://[${text}]/`);
    return true;
  } catch {
    return false;
  }
}

function scan(re: RegExp, value: string, rule: string, out: Found[], keep?: (m: string) => boolean): void {
  re.lastIndex = 0;
  for (let m = re.exec(value); m !== null; m = re.exec(value)) {
    if (m[0] === "") {
      re.lastIndex++;
      continue;
    }
    if (!keep || keep(m[0])) out.push([m.index, m.index + m[0].length, rule]);
  }
}

/** Each personal value in `value` as [start, end, rule], in order, not overlapping. */
function matches(value: string): Found[] {
  // One pass over the characters decides which patterns can match at all: most values are
  // short ids and labels that need no regex.
  let at = false;
  let dot = false;
  let slash = false;
  let paren = false;
  let plus = false;
  let colons = 0;
  let separators = 0; // "-", " " and "."
  let digitCount = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 48 && c <= 57) digitCount++;
    else if (c === 45 || c === 32) separators++;
    else if (c === 46) {
      dot = true;
      separators++;
    } else if (c === 58) colons++;
    else if (c === 64) at = true;
    else if (c === 47) slash = true;
    else if (c === 40) paren = true;
    else if (c === 43) plus = true;
  }
  const found: Found[] = [];
  if (at) scan(EMAIL, value, "pii_email", found);
  if (colons > 0 && slash && value.includes("://")) scan(URL_RE, value, "pii_url", found);
  if (dot) scan(IPV4, value, "pii_ip", found);
  if (colons >= 2) scan(IPV6, value, "pii_ip", found, isIPv6);
  if (slash && (paren || value.includes("Mozilla") || value.includes("Opera"))) {
    scan(USER_AGENT, value, "pii_user_agent", found);
  }
  if (value.length >= rules.phone_min_digits && (plus || separators >= 2) && digitCount >= rules.phone_min_digits) {
    scan(PHONE, value, "pii_phone", found);
  }
  if (found.length < 2) return found;
  // Earliest, then longest (an address inside a URL, an IPv4 inside an IPv6: one finding).
  found.sort((a, b) => a[0] - b[0] || b[1] - a[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0));
  const out = [found[0]];
  for (const item of found.slice(1)) if (item[0] >= out[out.length - 1][1]) out.push(item);
  return out;
}

function replace(value: string, placeholder: (rule: string) => string): string {
  const found = matches(value);
  if (!found.length) return value;
  let out = "";
  let last = 0;
  for (const [start, end, rule] of found) {
    out += value.slice(last, start) + placeholder(rule);
    last = end;
  }
  return out + value.slice(last);
}

function splitUrl(url: string): [authority: string, path: string] | null {
  const m = SCHEME.exec(url);
  if (!m) return null;
  const rest = url.slice(m[0].length);
  let cut = rest.length;
  for (const c of "/?#") {
    const i = rest.indexOf(c);
    if (i !== -1 && i < cut) cut = i;
  }
  return [rest.slice(0, cut), rest.slice(cut).split(QUERY_OR_FRAGMENT, 1)[0]];
}

function host(authority: string): string {
  const at = authority.lastIndexOf("@");
  const hostPort = at === -1 ? authority : authority.slice(at + 1);
  if (hostPort.startsWith("[")) {
    const end = hostPort.indexOf("]");
    return end === -1 ? "" : hostPort.slice(1, end).toLowerCase();
  }
  return hostPort.split(":", 1)[0].toLowerCase();
}

/** The first rule `value` breaks, or null. */
export function findPii(value: string): string | null {
  const found = matches(value);
  return found.length ? found[0][2] : null;
}

export function piiMessage(rule: string): string {
  return `${MESSAGES[rule]}; ${rules.advice}`;
}

export function stripRoute(route: string): string {
  if (!route) return route;
  const parts = splitUrl(route);
  if (parts) route = parts[1] || "/";
  route = route.split(QUERY_OR_FRAGMENT, 1)[0] || "/";
  return replace(route, (rule) => PLACEHOLDERS[rule]);
}

export function stripFingerprint(fingerprint: string): string {
  return replace(fingerprint, () => "?");
}

export function referrerSource(value: string): string {
  let text = value;
  // Only a text with "://" (or a scheme-relative "//") can be a URL: skip the parse otherwise.
  const parts = text.startsWith("//") ? splitUrl("http:" + text) : text.includes("://") ? splitUrl(text) : null;
  if (parts) {
    const h = host(parts[0]);
    text = (h.startsWith("www.") ? h.slice(4) : h) || "(unknown)";
  } else if (text.includes("?") || text.includes("#")) {
    text = text.split(QUERY_OR_FRAGMENT, 1)[0] || "(unknown)";
  }
  return replace(text, (rule) => PLACEHOLDERS[rule]);
}

/** The strip step of a field's mode, applied before its length and pattern checks. */
export function stripFor(mode: string, value: string): string {
  if (mode === "route") return stripRoute(value);
  if (mode === "fingerprint") return stripFingerprint(value);
  if (mode === "referrer") {
    const source = referrerSource(value);
    // At most 64 code points; 64 UTF-16 units or fewer cannot be more.
    return source.length <= 64 ? source : [...source].slice(0, 64).join("");
  }
  return value;
}
