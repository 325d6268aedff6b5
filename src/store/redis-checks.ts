import type { Redis } from "ioredis";
import type { StoreHealth } from "./types.js";

export interface CheckWanted {
  /** store.redis.replicas: how many replicas every begin and answer must reach. */
  replicas: number;
  /** A standalone or sentinel primary must not be a replica; a cluster node listed as primary is one. */
  expectPrimary: boolean;
}

function infoFields(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split("\r\n")) {
    const at = line.indexOf(":");
    if (at > 0 && !line.startsWith("#")) fields.set(line.slice(0, at), line.slice(at + 1));
  }
  return fields;
}

const firstLine = (err: unknown) => String((err as Error).message ?? err).split("\n")[0];

async function configValue(node: Redis, name: string): Promise<string> {
  const reply = (await node.config("GET", name)) as string[];
  return reply[1] ?? "";
}

/**
 * Reads what one primary allows and reports what loses or evicts records. Every record carries a
 * TTL, so every policy but noeviction (the volatile-* ones included) may drop one, and a retry of a
 * dropped key executes again. Managed services often forbid CONFIG (NOPERM, or the command renamed):
 * that is said, not taken for an error.
 */
export async function inspectPrimary(node: Redis, name: string, wanted: CheckWanted): Promise<StoreHealth> {
  const problems: string[] = [];
  const warnings: string[] = [];
  try {
    const info = infoFields(await node.info());
    const version = info.get("redis_version") ?? "";
    if (Number(version.split(".")[0]) < 7) {
      problems.push(`redis ${name}: version ${version}; the store's scripts need Redis 7.0 or later`);
    }
    if (wanted.expectPrimary && info.get("role") === "slave") {
      problems.push(
        `redis ${name}: is a read-only replica (READONLY): point store.redis at the primary, or use sentinel`,
      );
    }
    const used = Number(info.get("used_memory"));
    const max = Number(info.get("maxmemory"));
    if (max > 0 && used >= max) {
      problems.push(
        `redis ${name}: used_memory ${used} has reached maxmemory ${max} (OOM): new keys are refused; raise maxmemory or shorten ttl`,
      );
    }
    const replicas = Number(info.get("connected_slaves") ?? 0);
    if (wanted.replicas > replicas) {
      warnings.push(
        `redis ${name}: store.redis.replicas is ${wanted.replicas} but ${replicas} replica(s) are connected: ` +
          "every begin waits replicaTimeout and is refused",
      );
    }
  } catch (err) {
    warnings.push(`redis ${name}: cannot read INFO (${firstLine(err)}): memory and role unchecked`);
  }
  try {
    const appendonly = await configValue(node, "appendonly");
    const save = await configValue(node, "save");
    const policy = await configValue(node, "maxmemory-policy");
    if (appendonly !== "yes") {
      warnings.push(
        save === ""
          ? `redis ${name}: no persistence (appendonly no, save ""): a restart forgets every key and the next retry executes again; set appendonly yes`
          : `redis ${name}: appendonly no: a restart loses the keys written since the last snapshot (save ${save}) and their retries execute again; set appendonly yes`,
      );
    }
    if (policy !== "noeviction") {
      warnings.push(
        `redis ${name}: maxmemory-policy ${policy} may evict records (each has a TTL, so volatile-* policies evict them too) and a retry of an evicted key executes again; set maxmemory-policy noeviction`,
      );
    }
  } catch (err) {
    warnings.push(
      `redis ${name}: cannot read CONFIG (${firstLine(err)}): check by hand that appendonly is yes and maxmemory-policy is noeviction`,
    );
  }
  return { problems, warnings };
}
