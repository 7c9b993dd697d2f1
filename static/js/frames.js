/* Activation frames files (.frames, written by senseflosser/framesfile.py): fetched and read back.
   Layout: "SFAF", uint16 version, uint32 header length, a JSON header, then each block as
   frames x columns bytes, frame-major; byte q of a column stands for lo + q / 255 * (hi - lo). */

const MAGIC = "SFAF";
const VERSION = 1;
const PREFIX = 10;

/** The frames of one ``.frames`` file, its blocks dequantised: ``{layer, frames, frameRate, blocks}``,
    each block ``{columns, lo, hi, values}`` with ``values[i * columns + c]`` for frame i, column c. */
export function parseFrames(buffer) {
  const view = new DataView(buffer);
  const magic = String.fromCharCode(...new Uint8Array(buffer, 0, Math.min(4, buffer.byteLength)));
  if (buffer.byteLength < PREFIX || magic !== MAGIC || view.getUint16(4, true) !== VERSION) {
    throw new Error("not an activation frames file of version 1");
  }
  const size = view.getUint32(6, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, PREFIX, size)));
  const n = header.frames;
  let offset = PREFIX + size;
  const blocks = {};
  for (const b of header.blocks) {
    const bytes = new Uint8Array(buffer, offset, n * b.columns);
    const values = new Float32Array(n * b.columns);
    for (let i = 0; i < bytes.length; i++) {
      const c = i % b.columns;
      values[i] = b.lo[c] + (bytes[i] / 255) * (b.hi[c] - b.lo[c]);
    }
    blocks[b.name] = { columns: b.columns, lo: b.lo, hi: b.hi, values };
    offset += n * b.columns;
  }
  return { layer: header.layer, frames: n, frameRate: header.frame_rate, blocks };
}

/** Fetch and read one ``.frames`` URL (``null`` when there is none). */
export async function fetchFrames(url) {
  if (!url) return null;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`activation frames: ${response.status}`);
  return parseFrames(await response.arrayBuffer());
}

/** Frame ``i`` of a block, as a fresh array of its columns. */
export function row(block, i) {
  return block.values.subarray(i * block.columns, (i + 1) * block.columns);
}

/** The model frame shown at ``t`` seconds: the nearest frame centre (frame i is centred at i / frameRate). */
export function frameAt(frames, t) {
  return Math.min(frames.frames - 1, Math.max(0, Math.floor(t * frames.frameRate + 0.5)));
}
