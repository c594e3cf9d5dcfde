// A strict parser for the Prometheus text exposition format (version 0.0.4), written for the
// operations suite: it throws on anything a scraper could misread instead of guessing.
// Checks: HELP/TYPE syntax and placement (before the family's samples, once each), metric and
// label name syntax, label value escapes, float values, one family's samples contiguous, no
// duplicate series, counters non-negative, and for histograms: every series has _bucket
// lines in increasing `le` with non-decreasing counts, a `+Inf` bucket equal to `_count`,
// and a `_sum`.

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN)$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/** A sample value as a float ("+Inf", "-Inf", "NaN" included); throws on anything else. */
export function parseValue(text, where) {
  if (!FLOAT.test(text)) throw new Error(`${where}: value "${text}" is not a float`);
  if (/^[+-]?Inf$/.test(text)) return text.startsWith("-") ? -Infinity : Infinity;
  if (text.endsWith("NaN")) return NaN;
  return Number(text);
}

function parseLabels(text, where) {
  // text is what follows "{" up to and including "}"; returns [labels, consumed length].
  const labels = {};
  let i = 0;
  for (;;) {
    while (text[i] === " ") i++;
    if (text[i] === "}") return [labels, i + 1];
    const eq = text.indexOf("=", i);
    if (eq < 0) throw new Error(`${where}: label without "="`);
    const name = text.slice(i, eq).trim();
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: bad label name "${name}"`);
    if (name in labels) throw new Error(`${where}: label "${name}" repeated`);
    i = eq + 1;
    if (text[i] !== '"') throw new Error(`${where}: label "${name}" value is not quoted`);
    i++;
    let value = "";
    for (;;) {
      if (i >= text.length) throw new Error(`${where}: unterminated label value`);
      const c = text[i];
      if (c === "\\") {
        const n = text[i + 1];
        if (n === "\\") value += "\\";
        else if (n === '"') value += '"';
        else if (n === "n") value += "\n";
        else throw new Error(`${where}: bad escape "\\${n}" in label "${name}"`);
        i += 2;
      } else if (c === '"') {
        i++;
        break;
      } else if (c === "\n") {
        throw new Error(`${where}: raw newline in label value`);
      } else {
        value += c;
        i++;
      }
    }
    labels[name] = value;
    while (text[i] === " ") i++;
    if (text[i] === ",") { i++; continue; }
    if (text[i] === "}") return [labels, i + 1];
    throw new Error(`${where}: expected "," or "}" after label "${name}"`);
  }
}

/** The family a sample name belongs to, given the declared types. */
function familyOf(name, types) {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      if (types.get(base) === "histogram" || (types.get(base) === "summary" && suffix !== "_bucket")) return base;
    }
  }
  return name;
}

const seriesKey = (labels, drop = null) =>
  JSON.stringify(Object.keys(labels).filter((k) => k !== drop).sort().map((k) => [k, labels[k]]));

/**
 * Parses `text`; returns { families: Map(name -> {type, help, samples: [{name, labels, value}]}) }
 * and a `value(name, labels)` look-up (undefined when absent). Throws with line numbers.
 */
export function parsePrometheus(text) {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("exposition does not end with a newline");
  const families = new Map();
  const types = new Map();
  const helps = new Map();
  const seen = new Set();
  const closed = new Set();
  let current = null;
  const enter = (family, where) => {
    if (family === current) return;
    if (closed.has(family)) throw new Error(`${where}: lines of ${family} are not one group`);
    if (current !== null) closed.add(current);
    current = family;
  };
  const lines = text.split("\n");
  lines.pop();
  lines.forEach((line, idx) => {
    const where = `line ${idx + 1}`;
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const m = line.match(/^# (HELP|TYPE) (\S+)(?: (.*))?$/);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ""] = m;
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name "${name}" in ${kind}`);
      enter(name, where);
      if (kind === "TYPE") {
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type "${rest}" for ${name}`);
        if (types.has(name)) throw new Error(`${where}: second TYPE for ${name}`);
        if (families.get(name)?.samples.length) throw new Error(`${where}: TYPE for ${name} after its samples`);
        types.set(name, rest);
        if (families.has(name)) families.get(name).type = rest;
        else families.set(name, { type: rest, help: helps.get(name), samples: [] });
      } else {
        if (helps.has(name)) throw new Error(`${where}: second HELP for ${name}`);
        if (/\\(?![\\n])/.test(rest)) throw new Error(`${where}: bad escape in HELP for ${name}`);
        helps.set(name, rest);
        if (families.has(name)) families.get(name).help = rest;
      }
      return;
    }
    const nm = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)/);
    if (!nm) throw new Error(`${where}: no metric name: ${line}`);
    const name = nm[1];
    let rest = line.slice(name.length);
    let labels = {};
    if (rest.startsWith("{")) {
      const [parsed, used] = parseLabels(rest.slice(1), where);
      labels = parsed;
      rest = rest.slice(1 + used);
    }
    const parts = rest.trim().split(/ +/);
    if (!rest.startsWith(" ") || parts.length < 1 || parts.length > 2 || parts[0] === "") {
      throw new Error(`${where}: expected "name{labels} value [timestamp]": ${line}`);
    }
    const value = parseValue(parts[0], where);
    if (parts.length === 2 && !/^-?\d+$/.test(parts[1])) throw new Error(`${where}: bad timestamp "${parts[1]}"`);
    const family = familyOf(name, types);
    enter(family, where);
    const key = name + seriesKey(labels);
    if (seen.has(key)) throw new Error(`${where}: duplicate series ${name}${JSON.stringify(labels)}`);
    seen.add(key);
    const type = types.get(family) ?? "untyped";
    if (type === "counter" && !(value >= 0)) throw new Error(`${where}: counter ${name} is ${parts[0]}`);
    if (type === "histogram" && name === family) throw new Error(`${where}: histogram ${family} has a bare sample`);
    if (!families.has(family)) families.set(family, { type, help: helps.get(family), samples: [] });
    families.get(family).samples.push({ name, labels, value });
  });

  for (const [family, f] of families) {
    if (f.type !== "histogram") continue;
    const series = new Map();
    const entry = (labels, drop) => {
      const k = seriesKey(labels, drop);
      if (!series.has(k)) series.set(k, { buckets: [], sum: undefined, count: undefined });
      return series.get(k);
    };
    for (const s of f.samples) {
      if (s.name === `${family}_bucket`) {
        if (!("le" in s.labels)) throw new Error(`${family}_bucket without le`);
        entry(s.labels, "le").buckets.push([parseValue(s.labels.le, `${family} le`), s.value]);
      } else if (s.name === `${family}_sum`) {
        entry(s.labels).sum = s.value;
      } else if (s.name === `${family}_count`) {
        entry(s.labels).count = s.value;
      }
    }
    for (const [k, s] of series) {
      const id = `${family}${k}`;
      if (s.buckets.length === 0) throw new Error(`${id}: no buckets`);
      if (s.sum === undefined) throw new Error(`${id}: no _sum`);
      if (s.count === undefined) throw new Error(`${id}: no _count`);
      for (let i = 1; i < s.buckets.length; i++) {
        if (!(s.buckets[i][0] > s.buckets[i - 1][0])) throw new Error(`${id}: le not increasing at ${s.buckets[i][0]}`);
        if (!(s.buckets[i][1] >= s.buckets[i - 1][1])) throw new Error(`${id}: bucket counts decrease at le=${s.buckets[i][0]}`);
      }
      const last = s.buckets[s.buckets.length - 1];
      if (last[0] !== Infinity) throw new Error(`${id}: no le="+Inf" bucket`);
      if (last[1] !== s.count) throw new Error(`${id}: +Inf bucket ${last[1]} != _count ${s.count}`);
      if (s.count > 0 && !(s.sum >= 0)) throw new Error(`${id}: _sum ${s.sum} with _count ${s.count}`);
    }
  }

  return {
    families,
    /** The value of the series `name` with exactly `labels`, or undefined. */
    value(name, labels = {}) {
      const family = families.get(familyOf(name, types));
      const want = seriesKey(labels);
      return family?.samples.find((s) => s.name === name && seriesKey(s.labels) === want)?.value;
    },
    /** Sum over every series of `name` whose labels include `match`. */
    total(name, match = {}) {
      const family = families.get(familyOf(name, types));
      return (family?.samples ?? []).filter((s) => s.name === name &&
        Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
    },
  };
}
