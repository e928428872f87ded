/**
 * `refcow nbd --monitor SOCK`: starts the export's control socket (src/nbd/monitor-socket.ts) with the
 * command line's snapshot table for `snapshot -l`.
 */
import { MonitorSocket, type MonitorTarget } from "../nbd/monitor-socket.js";
import { snapshotTable } from "./snapshot-output.js";
import { snapshotRows } from "./commands/info.js";
import { CliError, messageOf } from "./errors.js";

export async function startMonitor(path: string | undefined, target: () => MonitorTarget): Promise<MonitorSocket | undefined> {
  if (path === undefined) return undefined;
  try {
    return await MonitorSocket.listen(path, target(), { formatSnapshots: (list) => snapshotTable(snapshotRows(list)) });
  } catch (e) {
    throw new CliError(`Failed to open the monitor socket '${path}': ${messageOf(e)}`);
  }
}
