/**
 * A disk v86 serves itself, for comparisons with refcow: the image goes to v86 as `hda` (an ArrayBuffer, a
 * File, or a URL: v86's own SyncBuffer, SyncFileBuffer / AsyncFileBuffer, AsyncXHRBuffer), on its IDE
 * primary master; nothing of refcow is involved. Its writes stay in v86's memory.
 */
import type { BootDisk } from "./disk-boot-machine.js";

export type V86OwnHda = NonNullable<BootDisk["v86Options"]["hda"]>;

export function v86OwnDisk(hda: V86OwnHda): BootDisk {
  return {
    type: "ide",
    v86Options: { hda },
    attach: () => undefined,
    initialState: (state) => state,
    quiesce: async (emulator) => {
      await emulator.stop();
    },
    saveState: (emulator) => emulator.save_state(),
    restoreState: (emulator, state) => emulator.restore_state(state),
  };
}
