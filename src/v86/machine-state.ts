/**
 * A saved machine state with a device v86 does not know about (the virtio-blk disk): v86's own state
 * buffer, and the device's registers as JSON, in one ArrayBuffer.
 *
 *   bytes 0-3    "RCMS" (refcow machine state)
 *   bytes 4-7    u32 LE: length J of the JSON that follows
 *   bytes 8..8+J UTF-8 JSON: { "device": <the device's state, absent for an IDE disk>,
 *                              "machine": <optional: what the emulator was built with (RAM, disk type),
 *                                          so a restore into a different one is refused clearly> }
 *   then         v86's `save_state()` buffer, unchanged
 *
 * A buffer that does not start with the magic is v86's state alone (an IDE guest's).
 */
const MAGIC = 0x534d4352; // "RCMS" little-endian

export function joinMachineState(v86: ArrayBuffer, device: unknown, machine?: unknown): ArrayBuffer {
  const json = new TextEncoder().encode(JSON.stringify(machine === undefined ? { device } : { device, machine }));
  const out = new Uint8Array(8 + json.length + v86.byteLength);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, json.length, true);
  out.set(json, 8);
  out.set(new Uint8Array(v86), 8 + json.length);
  return out.buffer;
}

export function splitMachineState(state: ArrayBuffer): { v86: ArrayBuffer; device?: unknown; machine?: unknown } {
  if (state.byteLength < 8) return { v86: state };
  const dv = new DataView(state);
  if (dv.getUint32(0, true) !== MAGIC) return { v86: state };
  const n = dv.getUint32(4, true);
  if (8 + n > state.byteLength) throw new Error(`machine state truncated: its header says ${n} bytes of JSON, the state has ${state.byteLength - 8}`);
  const json = JSON.parse(new TextDecoder().decode(new Uint8Array(state, 8, n))) as { device?: unknown; machine?: unknown };
  return { v86: state.slice(8 + n), device: json.device, machine: json.machine };
}
