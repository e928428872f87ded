/**
 * The output builders against text printed by qemu-img 7.2 (captured from real runs; the inputs are the
 * facts of those images).
 */
import { describe, expect, it } from "vitest";
import { checkExitCode, checkHuman, checkJson, type ImageCheckData, repairBanner } from "../../src/cli/check-output.js";
import { type ImageInfoData, imageInfoHuman, imageInfoHumanList, imageInfoJson } from "../../src/cli/info-output.js";
import { clipExtents, type MapEntry, renderMap } from "../../src/cli/map-output.js";
import { jsonString, QDict, tdbHash, toJson } from "../../src/cli/qobject.js";
import { localDate, snapshotTable, vmClock } from "../../src/cli/snapshot-output.js";

describe("QDict order", () => {
  it("follows qobject/qdict.c's hash buckets, newest first within a bucket", () => {
    const d = new QDict();
    for (const k of ["filename", "format", "dirty-flag", "actual-size", "virtual-size", "cluster-size", "snapshots", "format-specific"]) {
      d.put(k, 0);
    }
    expect(d.ordered().map(([k]) => k)).toEqual([
      "snapshots",
      "virtual-size",
      "filename",
      "cluster-size",
      "format",
      "actual-size",
      "format-specific",
      "dirty-flag",
    ]);
  });
  it("uses tdb_hash", () => {
    expect(tdbHash("snapshots") % 512).toBe(263);
    expect(tdbHash("dirty-flag") % 512).toBe(501);
  });
  it("escapes strings as qjson does", () => {
    expect(jsonString('a"b\\c\n\t\u0001é€😀')).toBe('"a\\"b\\\\c\\n\\t\\u0001\\u00E9\\u20AC\\uD83D\\uDE00"');
  });
  it("pretty-prints empty containers like qobject_to_json_pretty", () => {
    expect(toJson(new QDict())).toBe("{\n}");
    expect(toJson([])).toBe("[\n]");
    expect(toJson(new QDict().put("a", [1, 2]), false)).toBe('{"a": [1, 2]}');
  });
});

const base: ImageInfoData = {
  filename: "sub/ov.qcow2",
  format: "qcow2",
  dirtyFlag: false,
  actualSize: 200704,
  virtualSize: 1048576,
  clusterSize: 65536,
  backingFilename: "base.qcow2",
  fullBackingFilename: "sub/base.qcow2",
  backingFilenameFormat: "qcow2",
  formatSpecific: {
    type: "qcow2",
    data: { compat: "1.1", compressionType: "zlib", lazyRefcounts: false, refcountBits: 16, corrupt: false, extendedL2: false },
  },
};

const OV_HUMAN = `image: sub/ov.qcow2
file format: qcow2
virtual size: 1 MiB (1048576 bytes)
disk size: 196 KiB
cluster_size: 65536
backing file: base.qcow2 (actual path: sub/base.qcow2)
backing file format: qcow2
Format specific information:
    compat: 1.1
    compression type: zlib
    lazy refcounts: false
    refcount bits: 16
    corrupt: false
    extended l2: false
`;

const OV_JSON = `{
    "backing-filename-format": "qcow2",
    "virtual-size": 1048576,
    "filename": "sub/ov.qcow2",
    "cluster-size": 65536,
    "format": "qcow2",
    "actual-size": 200704,
    "format-specific": {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": false,
            "refcount-bits": 16,
            "corrupt": false,
            "extended-l2": false
        }
    },
    "full-backing-filename": "sub/base.qcow2",
    "backing-filename": "base.qcow2",
    "dirty-flag": false
}
`;

describe("info output", () => {
  it("human, with a backing file", () => expect(imageInfoHuman(base)).toBe(OV_HUMAN));
  it("JSON, with a backing file", () => expect(imageInfoJson(base)).toBe(OV_JSON));
  it("dirty image: 'cleanly shut down: no', v2 format-specific block", () => {
    const info: ImageInfoData = {
      ...base,
      backingFilename: undefined,
      fullBackingFilename: undefined,
      backingFilenameFormat: undefined,
      filename: "d.qcow2",
      dirtyFlag: true,
      formatSpecific: { type: "qcow2", data: { compat: "0.10", compressionType: "zlib", refcountBits: 16 } },
    };
    expect(imageInfoHuman(info)).toBe(
      "image: d.qcow2\nfile format: qcow2\nvirtual size: 1 MiB (1048576 bytes)\ndisk size: 196 KiB\ncluster_size: 65536\n" +
        "cleanly shut down: no\nFormat specific information:\n    compat: 0.10\n    compression type: zlib\n    refcount bits: 16\n",
    );
  });
  it("raw JSON", () => {
    const raw: ImageInfoData = { filename: "o3", format: "raw", dirtyFlag: false, actualSize: 131072, virtualSize: 67108864 };
    expect(imageInfoJson(raw)).toBe(
      '{\n    "virtual-size": 67108864,\n    "filename": "o3",\n    "format": "raw",\n    "actual-size": 131072,\n    "dirty-flag": false\n}\n',
    );
  });
  it("backing chain: human separated by an empty line, JSON as a list", () => {
    const b: ImageInfoData = { filename: "b", format: "raw", dirtyFlag: false, actualSize: 0, virtualSize: 512 };
    expect(imageInfoHumanList([b, b])).toBe(`${imageInfoHuman(b)}\n${imageInfoHuman(b)}`);
    expect(imageInfoJson([b])).toBe(
      '[\n    {\n        "virtual-size": 512,\n        "filename": "b",\n        "format": "raw",\n        "actual-size": 0,\n        "dirty-flag": false\n    }\n]\n',
    );
  });
  it("snapshots, JSON field order", () => {
    const info: ImageInfoData = {
      filename: "a.qcow2",
      format: "raw",
      virtualSize: 512,
      snapshots: [{ id: "1", name: "snap1", vmStateSize: 0, dateSec: 1795474378, dateNsec: 182214000, vmClockNsec: 0, icount: 0 }],
    };
    expect(imageInfoJson(info)).toBe(`{
    "snapshots": [
        {
            "icount": 0,
            "vm-clock-nsec": 0,
            "name": "snap1",
            "date-sec": 1795474378,
            "date-nsec": 182214000,
            "vm-clock-sec": 0,
            "id": "1",
            "vm-state-size": 0
        }
    ],
    "virtual-size": 512,
    "filename": "a.qcow2",
    "format": "raw"
}
`);
  });
});

describe("snapshot table", () => {
  it("formats like bdrv_snapshot_dump", () => {
    const date = 1795474378;
    const table = snapshotTable([
      { id: "1", name: "snap1", vmStateSize: 0, dateSec: date, dateNsec: 0, vmClockNsec: 0, icount: 0 },
      { id: "10", name: "snap two", vmStateSize: 1536, dateSec: date, dateNsec: 0, vmClockNsec: 3723_456_000_000, icount: undefined },
    ]);
    expect(table).toBe(
      "Snapshot list:\n" +
        "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
        `1         snap1                 0 B ${localDate(date)} 00:00:00.000          0\n` +
        `10        snap two          1.5 KiB ${localDate(date)} 01:02:03.456           \n`,
    );
    expect(snapshotTable([])).toBe("");
  });
  it("vm clock", () => {
    expect(vmClock(0)).toBe("00:00:00.000");
    expect(vmClock(61_001_000_000)).toBe("00:01:01.001");
  });
  it("pads by bytes, as printf does", () => {
    const row = snapshotTable([{ id: "1", name: "näme", vmStateSize: 0, dateSec: 0, dateNsec: 0, vmClockNsec: 0 }]).split("\n")[2]!;
    expect(row.startsWith("1         näme            ")).toBe(true);
  });
});

const clean: ImageCheckData = {
  filename: "a.qcow2",
  format: "qcow2",
  checkErrors: 0,
  imageEndOffset: 851968,
  corruptions: 0,
  leaks: 0,
  corruptionsFixed: 0,
  leaksFixed: 0,
  totalClusters: 1024,
  allocatedClusters: 2,
  fragmentedClusters: 1,
  compressedClusters: 0,
};

describe("check output", () => {
  it("clean image", () => {
    expect(checkHuman(clean)).toBe(
      "No errors were found on the image.\n2/1024 = 0.20% allocated, 50.00% fragmented, 0.00% compressed clusters\nImage end offset: 851968\n",
    );
    expect(checkJson(clean)).toBe(`{
    "image-end-offset": 851968,
    "total-clusters": 1024,
    "check-errors": 0,
    "allocated-clusters": 2,
    "filename": "a.qcow2",
    "format": "qcow2",
    "fragmented-clusters": 1
}
`);
    expect(checkExitCode(clean)).toBe(0);
  });
  it("empty image: no allocation line", () => {
    const empty = { ...clean, filename: "e.qcow2", imageEndOffset: 262144, totalClusters: 16, allocatedClusters: 0, fragmentedClusters: 0 };
    expect(checkHuman(empty)).toBe("No errors were found on the image.\nImage end offset: 262144\n");
    expect(checkJson(empty)).toBe(
      '{\n    "image-end-offset": 262144,\n    "total-clusters": 16,\n    "check-errors": 0,\n    "filename": "e.qcow2",\n    "format": "qcow2"\n}\n',
    );
  });
  it("leaks: exit code 3", () => {
    const leaky = { ...clean, leaks: 2, imageEndOffset: 786432, fragmentedClusters: 0 };
    expect(checkHuman(leaky)).toBe(
      "\n2 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n" +
        "2/1024 = 0.20% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 786432\n",
    );
    expect(checkJson(leaky)).toBe(`{
    "image-end-offset": 786432,
    "total-clusters": 1024,
    "check-errors": 0,
    "leaks": 2,
    "allocated-clusters": 2,
    "filename": "a.qcow2",
    "format": "qcow2"
}
`);
    expect(checkExitCode(leaky)).toBe(3);
  });
  it("corruptions win over leaks: exit code 2; check errors: 1", () => {
    const bad = { ...clean, corruptions: 2, leaks: 1 };
    expect(checkHuman(bad)).toContain("\n2 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n");
    expect(checkExitCode(bad)).toBe(2);
    expect(checkExitCode({ ...bad, checkErrors: 1 })).toBe(1);
  });
  it("repair banner and fixed counters", () => {
    expect(repairBanner(2, 0)).toBe(
      "The following inconsistencies were found and repaired:\n\n    2 leaked clusters\n    0 corruptions\n\nDouble checking the fixed image now...\n",
    );
    expect(checkJson({ ...clean, fragmentedClusters: 0, imageEndOffset: 458752, leaksFixed: 2 })).toBe(`{
    "image-end-offset": 458752,
    "total-clusters": 1024,
    "check-errors": 0,
    "leaks-fixed": 2,
    "allocated-clusters": 2,
    "filename": "a.qcow2",
    "format": "qcow2"
}
`);
  });
});

describe("map output", () => {
  // The extents of a 64 MiB overlay over a.qcow2 (qemu-img map of ov.qcow2 in QEMU 7.2).
  const extents = [
    { start: 0, length: 65536, depth: 0, present: true, zero: true, data: false },
    { start: 65536, length: 983040, depth: 1, present: false, zero: true, data: false },
    { start: 1048576, length: 4096, depth: 1, present: true, zero: false, data: true, offset: 393216 },
    { start: 1052672, length: 61440, depth: 1, present: true, zero: true, data: true, offset: 397312 },
    { start: 1114112, length: 983040, depth: 1, present: false, zero: true, data: false },
    { start: 2097152, length: 65536, depth: 0, present: true, zero: true, data: false },
    { start: 2162688, length: 2031616, depth: 1, present: false, zero: true, data: false },
    { start: 4194304, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 327680 },
    { start: 4259840, length: 62849024, depth: 1, present: false, zero: true, data: false },
  ];
  const names = ["ov.qcow2", "a.qcow2"];
  const entries = (): MapEntry[] => clipExtents(extents, 0, 67108864, (d) => names[d]);

  it("JSON", () => {
    expect(renderMap(entries(), "json").text).toBe(
      `[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false},
{ "start": 65536, "length": 983040, "depth": 1, "present": false, "zero": true, "data": false},
{ "start": 1048576, "length": 4096, "depth": 1, "present": true, "zero": false, "data": true, "offset": 393216},
{ "start": 1052672, "length": 61440, "depth": 1, "present": true, "zero": true, "data": true, "offset": 397312},
{ "start": 1114112, "length": 983040, "depth": 1, "present": false, "zero": true, "data": false},
{ "start": 2097152, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false},
{ "start": 2162688, "length": 2031616, "depth": 1, "present": false, "zero": true, "data": false},
{ "start": 4194304, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 4259840, "length": 62849024, "depth": 1, "present": false, "zero": true, "data": false}]
`,
    );
  });
  it("human", () => {
    expect(renderMap(entries(), "human")).toEqual({
      text:
        "Offset          Length          Mapped to       File\n" +
        "0x100000        0x1000          0x60000         a.qcow2\n" +
        "0x400000        0x10000         0x50000         ov.qcow2\n",
    });
  });
  it("merges contiguous extents and splits finer ones", () => {
    const split = [
      { start: 0, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 327680 },
      { start: 65536, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 393216 },
      { start: 131072, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 65536 },
    ];
    const out = renderMap(clipExtents(split, 0, 196608, () => "f"), "json").text;
    expect(out).toBe(
      '[{ "start": 0, "length": 131072, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},\n' +
        '{ "start": 131072, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 65536}]\n',
    );
    expect(renderMap(clipExtents(split, 0, 196608, () => "f"), "human").text).toBe(
      "Offset          Length          Mapped to       File\n0               0x20000         0x50000         f\n0x20000         0x10000         0x10000         f\n",
    );
  });
  it("clips to --start-offset / --max-length", () => {
    const out = renderMap(clipExtents(extents, 1050000, 1060000, (d) => names[d]), "json", 1050000).text;
    expect(out).toBe(
      '[{ "start": 1050000, "length": 2672, "depth": 1, "present": true, "zero": false, "data": true, "offset": 394640},\n' +
        '{ "start": 1052672, "length": 7328, "depth": 1, "present": true, "zero": true, "data": true, "offset": 397312}]\n',
    );
  });
  it("human output refuses compressed clusters", () => {
    const r = renderMap([{ start: 0, length: 65536, depth: 0, present: true, zero: false, data: true }], "human");
    expect(r.error).toBe("File contains external, encrypted or compressed clusters.");
    expect(r.text).toBe("Offset          Length          Mapped to       File\n");
  });
});
