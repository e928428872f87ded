/**
 * Crash safety of compaction: a fragmented image with snapshots (and VM state) is compacted on a
 * fault-injecting file; every state a power loss could leave at any point of the compaction (prefixes of the
 * unflushed writes, the last one torn, other subsets) must open in refcow — which repairs it when the dirty
 * bit is set — and then check clean, with the active layer, every snapshot and every VM state exactly as
 * they were before compaction began. A sample of the states also goes through qemu-img check (after QEMU's
 * own repair of a dirty image) and qemu-img convert.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { compactImage } from "../../src/open/qcow2.js";
import { SnapshotError } from "../../src/engine/errors.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import type { CreateOptions } from "../../src/engine/types.js";
import { INCOMPAT_DIRTY } from "../../src/format/features.js";
import { INCOMPAT_REFCOW_JOURNAL } from "../../src/schemes/journal-format.js";
import { FaultFile } from "../../src/io/fault-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { qemuCheck, qemuImg, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("compact-crash");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface Expected {
  active: Uint8Array;
  snapshots: Map<string, { data: Uint8Array; vmState: Uint8Array }>;
}

/** A seeded workload under append (so freed clusters stay holes) with snapshots, overwrites and deletes. */
function fragmentedImage(geo: CreateOptions, scheme: string, seed: number): { bytes: Uint8Array; expected: Expected } {
  const rnd = random(seed);
  const file = new MemoryFile();
  Qcow2Image.create(file, geo);
  const img = Qcow2Image.open(file, { scheme, alloc: "append" });
  const size = geo.size;
  const model = new Uint8Array(size);
  const snapshots = new Map<string, { data: Uint8Array; vmState: Uint8Array }>();
  let n = 0;
  for (let step = 0; step < 24; step++) {
    const r = rnd();
    const off = Math.floor(rnd() * size);
    const len = Math.min(size - off, 1 + Math.floor(rnd() * (size / 4)));
    if (r < 0.55) {
      const byte = 1 + Math.floor(rnd() * 255);
      img.write(off, new Uint8Array(len).fill(byte));
      model.fill(byte, off, off + len);
    } else if (r < 0.65) {
      img.discard(off, len);
      const cs = img.clusterSize;
      const a = Math.ceil(off / cs) * cs;
      const b = off + len === size ? size : Math.floor((off + len) / cs) * cs;
      if (a < b) model.fill(0, a, b);
    } else if (r < 0.85) {
      const vmState = new Uint8Array(Math.floor(rnd() * 20_000)).fill(n + 1);
      const name = `s${n++}`;
      img.snapshotCreate(name, { vmState });
      snapshots.set(name, { data: model.slice(), vmState });
    } else if (snapshots.size > 1) {
      const name = [...snapshots.keys()][Math.floor(rnd() * snapshots.size)];
      try {
        img.snapshotDelete(name);
        snapshots.delete(name);
      } catch (e) {
        if (!(e instanceof SnapshotError)) throw e;
      }
    }
  }
  img.close();
  return { bytes: file.contents(), expected: { active: model, snapshots } };
}

function isDirty(bytes: Uint8Array): boolean {
  return (new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(72) & INCOMPAT_DIRTY) !== 0n;
}

/**
 * Recovers a crash state as refcow does (a writable open repairs a dirty image), then verifies it. Every
 * state compaction itself leaves between its first and its last header write is dirty, and must come back
 * without a leak; a clean state may hold leaks only from the scheme's own open and close around it (as a
 * crash leaves them in QEMU).
 */
function verifyRecovered(bytes: Uint8Array, scheme: string, expected: Expected, what: string): void {
  const dirty = isDirty(bytes);
  const file = new MemoryFile(bytes);
  Qcow2Image.open(file, { scheme }).close();
  const img = Qcow2Image.open(new MemoryFile(file.contents()), { readOnly: true });
  try {
    const check = img.check();
    const detail = `${what}: ${check.messages.slice(0, 3).join("; ")}`;
    expect(check.corruptions + check.checkErrors, detail).toBe(0);
    if (dirty) expect(check.leaks, detail).toBe(0);
    expect(img.info().dirty, what).toBe(false);
    expect(Buffer.from(img.read(0, img.size)).equals(Buffer.from(expected.active)), `${what}: active layer`).toBe(true);
    expect(img.snapshotList().map((s) => s.name).sort(), what).toEqual([...expected.snapshots.keys()].sort());
    for (const [name, s] of expected.snapshots) {
      const buf = new Uint8Array(img.size);
      img.readSnapshot(name, buf, 0);
      expect(Buffer.from(buf).equals(Buffer.from(s.data)), `${what}: snapshot ${name}`).toBe(true);
      expect(Buffer.from(img.readVmState(name)).equals(Buffer.from(s.vmState)), `${what}: VM state of ${name}`).toBe(true);
    }
  } finally {
    img.close();
  }
}

/** The crash state as QEMU sees it: clean after QEMU's own repair when dirty, same guest bytes. */
function verifyWithQemu(bytes: Uint8Array, expected: Expected, what: string): void {
  const file = path.join(dir, "state.qcow2");
  fs.writeFileSync(file, bytes);
  const dirty = isDirty(bytes);
  if (dirty) qemuCheck(file, ["-r", "all"]);
  const check = qemuCheck(file);
  // 0: clean; 3: leaked clusters only, from the scheme's open or close around compaction (clean states).
  expect(dirty ? [0] : [0, 3], `${what} (QEMU): ${check.out}`).toContain(check.status);
  expect(qemuRaw(file).equals(Buffer.from(expected.active)), `${what} (QEMU): active layer`).toBe(true);
  for (const [name, s] of expected.snapshots) expect(qemuRaw(file, name).equals(Buffer.from(s.data)), `${what} (QEMU): snapshot ${name}`).toBe(true);
  fs.rmSync(file);
}

const CASES: { scheme: string; seed: number; geo: CreateOptions & { label: string } }[] = [
  { scheme: "eager", seed: 1, geo: { label: "4k", size: 256 * 1024, clusterSize: 4096 } },
  { scheme: "lazy", seed: 2, geo: { label: "512", size: 96 * 1024, clusterSize: 512 } },
  { scheme: "lazy-count", seed: 3, geo: { label: "16k-extl2", size: 512 * 1024, clusterSize: 16384, extendedL2: true } },
  { scheme: "journal", seed: 4, geo: { label: "4k", size: 256 * 1024, clusterSize: 4096 } },
  { scheme: "owner", seed: 5, geo: { label: "512-8bit", size: 96 * 1024, clusterSize: 512, refcountBits: 8 } },
];

describe("compaction survives a crash at any point", () => {
  it("qemu-img is there to check a sample", () => expect(qemuImg(["--version"])).toMatch(/qemu-img/));
  for (const c of CASES) {
    it(`${c.scheme}, ${c.geo.label}, seed ${c.seed}`, () => {
      const { bytes, expected } = fragmentedImage(c.geo, c.scheme, c.seed);
      const fault = new FaultFile(bytes);
      const result = compactImage(fault, { scheme: c.scheme });
      expect(result.clustersMoved, "the workload left something to move").toBeGreaterThan(0);
      expect(result.bytesAfter).toBeLessThan(result.bytesBefore);
      verifyRecovered(fault.contents(), c.scheme, expected, "after compaction");
      const final = Qcow2Image.open(new MemoryFile(fault.contents()), { readOnly: true });
      expect(final.check().leaks, "no leak after compaction").toBe(0);
      final.close();

      const rnd = random(c.seed * 31 + 7);
      const seen = new Set<string>();
      let states = 0;
      let dirtyStates = 0;
      const sample: Uint8Array[] = [];
      for (let at = 0; at <= fault.log.length; at++) {
        const truncates = fault.log.slice(fault.lastFlushBefore(at), at).filter((o) => o.kind === "truncate").length;
        for (const st of fault.crashStates(at, { torn: true, subsets: 2, random: rnd })) {
          const key = `${fault.lastFlushBefore(at)}|${truncates}|${st.applied.join(",")}|${st.tornSectors ?? ""}`;
          if (seen.has(key)) continue;
          seen.add(key);
          const state = fault.materialize(st).contents();
          if (isDirty(state)) dirtyStates++;
          verifyRecovered(state, c.scheme, expected, `crash at ${at}, ${st.applied.length} unflushed writes applied${st.tornSectors ? " (last torn)" : ""}`);
          // QEMU refuses, by design, a state that still has a refcow journal (before the journal scheme's close).
          const journal = (new DataView(state.buffer, state.byteOffset).getBigUint64(72) & INCOMPAT_REFCOW_JOURNAL) !== 0n;
          if (!journal && rnd() < 0.03 && sample.length < 8) sample.push(state);
          states++;
        }
      }
      console.log(`${c.scheme}/${c.geo.label}: ${fault.log.length} operations, ${states} crash states (${dirtyStates} dirty), ${result.clustersMoved} clusters moved`);
      expect(states).toBeGreaterThan(50);
      expect(dirtyStates).toBeGreaterThan(0);
      sample.forEach((s, i) => verifyWithQemu(s, expected, `sampled state ${i}`));
    }, 300_000);
  }
});
