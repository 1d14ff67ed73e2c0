// Serves the Worker (with recording AE bindings) in workerd on loopback for the Python
// end-to-end tests: prints {"url": ...} on one line, runs until stdin closes or SIGTERM.
// Usage: node test/serve.mjs [--secret S] [--origins a,b]
import { startWorker } from "./harness.mjs";

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const { mf, url } = await startWorker({ port: 0, allowedOrigins: arg("--origins", "https://app.example.com"), secret: arg("--secret", undefined) });
process.stdout.write(JSON.stringify({ url: url.href }) + "\n");
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.resume();
