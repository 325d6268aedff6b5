// Preloaded with --import: appends the name of every package the process imports to the file
// named by LOADED_PACKAGES, one per line.
import { register } from "node:module";

register(
  `data:text/javascript,${encodeURIComponent(`
    import { appendFileSync } from "node:fs";
    const file = ${JSON.stringify(process.env.LOADED_PACKAGES ?? "")};
    export async function resolve(specifier, context, next) {
      const resolved = await next(specifier, context);
      const m = /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(resolved.url);
      if (m && file) appendFileSync(file, m[1] + "\\n");
      return resolved;
    }
  `)}`,
);
