/**
 * Who may connect once TLS has verified a client certificate: QEMU's authorization objects, applied as
 * qemu-nbd's `--tls-authz` applies them, to the distinguished name of the client's X.509 certificate (not to
 * PSK users, nor when the credentials do not verify peers: QEMU 7.2 checks neither).
 *
 * The identity is the certificate's subject as GnuTLS prints it and QEMU compares it: its RDNs in the
 * certificate's order, joined by "," (multi-valued RDNs by "+"), each `TYPE=value` with RFC 4514 escapes,
 * e.g. `C=GB,O=Example Org,CN=laptop.example.com` for a subject made as `/C=GB/O=Example Org/CN=...`.
 *
 * - authz-simple: one identity, compared exactly.
 * - authz-list-file: a JSON file (QEMU's format):
 *   `{ "rules": [ { "match": "C=GB,*", "policy": "allow", "format": "glob" }, ... ], "policy": "deny" }`,
 *   `format` "exact" (default) or "glob" (fnmatch: `*`, `?`, `[...]`, `\` escapes), `policy` "allow" or
 *   "deny"; the first rule that matches decides, else the list's own `policy` (default deny). With
 *   refresh (QEMU's default) the file is read again for each client, so edits apply to the next one; a
 *   file that has become unreadable or invalid denies everyone until it is fixed.
 */
import * as fs from "node:fs";
import type { X509Certificate } from "node:crypto";

export type AuthzPolicy = "allow" | "deny";

export interface AuthzRule {
  match: string;
  policy: AuthzPolicy;
  format: "exact" | "glob";
}

export interface AuthzList {
  rules: AuthzRule[];
  policy: AuthzPolicy;
}

/** Plain data (it crosses to the serving thread). */
export type Authz =
  | { kind: "simple"; id: string; identity: string }
  | { kind: "list-file"; id: string; filename: string; refresh: boolean; list: AuthzList };

/** Short names OpenSSL prints that GnuTLS prints otherwise. */
const GNUTLS_NAMES: Record<string, string> = { emailAddress: "EMAIL" };

/**
 * The subject of a certificate as QEMU's authz sees it. Node prints the subject one RDN a line, in order,
 * with RFC 2253 escapes (so a "+" or "," inside a value is escaped and never a separator).
 */
export function distinguishedName(cert: X509Certificate): string {
  return cert.subject
    .split("\n")
    .filter((rdn) => rdn !== "")
    .map((rdn) =>
      rdn
        .split(" + ")
        .map((ava) => {
          const eq = ava.indexOf("=");
          const type = ava.slice(0, eq);
          return `${GNUTLS_NAMES[type] ?? type}${ava.slice(eq)}`;
        })
        .join("+"),
    )
    .join(",");
}

/** Parses an authz-list-file's JSON; throws with the reason when it is not QEMU's format. */
export function parseAuthzList(text: string, filename: string): AuthzList {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`${filename}: not JSON (${(e as Error).message})`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error(`${filename}: expected a JSON object with "rules" and "policy"`);
  const o = doc as Record<string, unknown>;
  const policy = o.policy ?? "deny";
  if (policy !== "allow" && policy !== "deny") throw new Error(`${filename}: policy must be "allow" or "deny"`);
  const rulesIn = o.rules ?? [];
  if (!Array.isArray(rulesIn)) throw new Error(`${filename}: "rules" must be a list`);
  const rules = rulesIn.map((r: unknown, i): AuthzRule => {
    if (typeof r !== "object" || r === null) throw new Error(`${filename}: rule ${i} is not an object`);
    const { match, policy: p, format = "exact" } = r as Record<string, unknown>;
    if (typeof match !== "string") throw new Error(`${filename}: rule ${i} has no "match" string`);
    if (p !== "allow" && p !== "deny") throw new Error(`${filename}: rule ${i}: policy must be "allow" or "deny"`);
    if (format !== "exact" && format !== "glob") throw new Error(`${filename}: rule ${i}: format must be "exact" or "glob"`);
    return { match, policy: p, format };
  });
  return { rules, policy };
}

export function loadAuthzList(filename: string): AuthzList {
  let text: string;
  try {
    text = fs.readFileSync(filename, "utf8");
  } catch (e) {
    throw new Error(`Unable to read ${filename}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "No such file or directory" : (e as Error).message}`);
  }
  return parseAuthzList(text, filename);
}

/** Whether `identity` may connect. Throws when a refreshed list file cannot be read (the caller denies). */
export function isAuthorized(authz: Authz, identity: string): boolean {
  if (authz.kind === "simple") return identity === authz.identity;
  const list = authz.refresh ? loadAuthzList(authz.filename) : authz.list;
  for (const rule of list.rules) {
    const hit = rule.format === "exact" ? rule.match === identity : globMatch(rule.match, identity);
    if (hit) return rule.policy === "allow";
  }
  return list.policy === "allow";
}

/** fnmatch(3) without flags: `*` any run, `?` any one character, `[abc]` `[a-z]` `[!x]` sets, `\x` a literal. */
export function globMatch(pattern: string, text: string): boolean {
  // Iterative matching with one backtrack point (the last `*`), linear in practice.
  let p = 0;
  let t = 0;
  let starP = -1;
  let starT = 0;
  while (t < text.length) {
    if (p < pattern.length) {
      const c = pattern[p]!;
      if (c === "*") {
        starP = p++;
        starT = t;
        continue;
      }
      const step = matchOne(pattern, p, text[t]!);
      if (step > 0) {
        p += step;
        t++;
        continue;
      }
    }
    if (starP < 0) return false;
    p = starP + 1;
    t = ++starT;
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}

/** Length of the pattern element at `p` when it matches `ch`, else 0. */
function matchOne(pattern: string, p: number, ch: string): number {
  const c = pattern[p]!;
  if (c === "?") return 1;
  if (c === "\\" && p + 1 < pattern.length) return pattern[p + 1] === ch ? 2 : 0;
  if (c === "[") {
    let i = p + 1;
    const negate = pattern[i] === "!" || pattern[i] === "^";
    if (negate) i++;
    let hit = false;
    let first = true;
    while (i < pattern.length && (first || pattern[i] !== "]")) {
      first = false;
      let lo = pattern[i]!;
      if (lo === "\\" && i + 1 < pattern.length) lo = pattern[++i]!;
      if (pattern[i + 1] === "-" && i + 2 < pattern.length && pattern[i + 2] !== "]") {
        let hi = pattern[i + 2]!;
        i += 2;
        if (hi === "\\" && i + 1 < pattern.length) hi = pattern[++i]!;
        if (ch >= lo && ch <= hi) hit = true;
      } else if (ch === lo) hit = true;
      i++;
    }
    // No closing bracket: the "[" is an ordinary character.
    if (i >= pattern.length) return ch === "[" ? 1 : 0;
    return hit !== negate ? i + 1 - p : 0;
  }
  return c === ch ? 1 : 0;
}
