// Loaded by build.sh (`node --import`) before jco runs. It works around a
// mismatch in what `npm install @bytecodealliance/jco@1.35.0` pulls in:
// jco's WIT reader runs in the WASI shim @bytecodealliance/preview2-shim,
// whose 0.26 releases no longer give a program the whole filesystem by
// default, so `jco componentize --wit wit` fails with "failed to get path
// metadata: No such file or directory". This gives the shim one directory,
// this plugin's, and only when nothing else gave it any.
import { register } from "node:module";

const hook = `
const dir = JSON.stringify(${JSON.stringify(process.cwd())});
export async function load(url, context, next) {
  const result = await next(url, context);
  if (url.endsWith("/@bytecodealliance/preview2-shim/dist/nodejs/filesystem.js")) {
    const fix = "\\nif (preopens.getDirectories().length === 0) _addPreopen(" + dir + ", " + dir + ");\\n";
    return { ...result, source: String(result.source) + fix, shortCircuit: true };
  }
  return result;
}
`;
register("data:text/javascript," + encodeURIComponent(hook));
