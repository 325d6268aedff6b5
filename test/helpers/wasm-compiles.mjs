// Preloaded with --import: writes "wasm module compiled" to stdout, where the gateway says that it
// listens, each time the process compiles a WebAssembly module (undici compiles its HTTP parser so),
// so that a test can see when that happens.
const Compile = WebAssembly.Module;
WebAssembly.Module = new Proxy(Compile, {
  construct(target, args, newTarget) {
    process.stdout.write("wasm module compiled\n");
    return Reflect.construct(target, args, newTarget);
  },
});
