import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

export const CLI = fileURLToPath(new URL("../../dist/cli.js", import.meta.url));

export interface GatewayProcess {
  url: string;
  proc: ChildProcess;
  output(): string;
  /** Resolves once the output (stdout and stderr) contains `text`. */
  waitForOutput(text: string): Promise<void>;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
}

/**
 * Runs `serve` as a real child process and resolves once it prints the address it listens on.
 * `launcher` runs node, as in `prlimit --nofile=512 node ...`.
 */
export async function spawnServe(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  cli = CLI,
  launcher: string[] = [],
): Promise<GatewayProcess> {
  const [command, ...before] = [...launcher, process.execPath];
  const proc = spawn(command as string, [...before, cli, "serve", ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const watchers: { text: string; resolve: () => void }[] = [];
  const append = (chunk: Buffer) => {
    out += chunk.toString();
    for (const w of watchers.filter((w) => out.includes(w.text))) {
      watchers.splice(watchers.indexOf(w), 1);
      w.resolve();
    }
  };
  const exited = once(proc, "exit").then(([code, signal]) => (code ?? signal) as number | string);
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      append(chunk);
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1] as string);
    };
    proc.stdout?.on("data", onData);
    proc.stderr?.on("data", append);
    exited.then((code) => reject(new Error(`serve exited (${code}) before listening:\n${out}`)));
  });
  return {
    url,
    proc,
    output: () => out,
    waitForOutput: (text) =>
      out.includes(text) ? Promise.resolve() : new Promise((resolve) => watchers.push({ text, resolve })),
    exited,
  };
}

/** Runs the CLI to completion and returns its exit code and output. */
export async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  proc.stdout.on("data", (c: Buffer) => {
    stdout += c.toString();
  });
  proc.stderr.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const [code] = await once(proc, "close");
  return { code: code as number, stdout, stderr };
}
