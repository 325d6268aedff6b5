import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

/** Debian's chromium (what .ci/run installs), or CHROMIUM_PATH. */
export function chromiumPath(): string {
  const path = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
  if (!existsSync(path)) {
    throw new Error(`no Chromium at ${path}: install Debian's chromium, or set CHROMIUM_PATH`);
  }
  return path;
}

export function launchChromium(): Promise<Browser> {
  // No sandbox: CI runs as root, where Chromium refuses its own. The pages opened are our own files.
  return chromium.launch({ executablePath: chromiumPath(), args: ["--no-sandbox"] });
}
