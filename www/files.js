// What the user gives the page, as the `[{ name, bytes }]` list the worker takes: dropped files
// and folders (walked), a multi-file or folder selection, read with progress. Which of them is a
// scan (NIfTI, a .hdr/.img pair, DICOM, a .zip) is the core's decision, not this file's.

/** Most files read at once: enough to keep the disk busy, few enough to keep memory flat. */
const PARALLEL_READS = 8;

/** `entry.file()` as a promise. */
const entryFile = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));

/** Every entry of a directory: `readEntries` hands them out in batches (100 in Chromium) until empty. */
async function readDirectory(dir) {
  const reader = dir.createReader();
  const all = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) return all;
    all.push(...batch);
  }
}

/**
 * The files under `entries` (FileSystemEntry, from `DataTransferItem.webkitGetAsEntry()`),
 * folders walked depth-first, each `File` paired with its path inside the drop. Hidden files
 * (".DS_Store", "._x" from macOS) are skipped: they are never part of a series.
 */
export async function walkEntries(entries) {
  const out = [];
  const visit = async (entry) => {
    if (!entry || entry.name.startsWith(".")) return;
    if (entry.isDirectory) {
      for (const child of await readDirectory(entry)) await visit(child);
    } else if (entry.isFile) {
      out.push({ file: await entryFile(entry), path: entry.fullPath?.replace(/^\//, "") || entry.name });
    }
  };
  for (const e of entries) await visit(e);
  return out;
}

/**
 * The files of a drop: folders walked where the browser exposes entries, else the flat list.
 * The entries must be taken synchronously, inside the drop event: the list dies after it.
 */
export function droppedEntries(dataTransfer) {
  const items = [...(dataTransfer?.items ?? [])].filter((i) => i.kind === "file");
  const entries = items.map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (entries.length === items.length && entries.length > 0) return () => walkEntries(entries);
  const files = [...(dataTransfer?.files ?? [])];
  return async () => files.map((file) => ({ file, path: file.name }));
}

/** The files of a file input (with `webkitdirectory`, the folder's, with their relative paths). */
export function inputFiles(list) {
  return [...list]
    .filter((file) => !file.name.startsWith("."))
    .map((file) => ({ file, path: file.webkitRelativePath || file.name }));
}

/** A short name for what was given: the file, the folder, or a count. */
export function displayName(picked) {
  if (picked.length === 1) return picked[0].path.split("/").pop();
  const tops = new Set(picked.map((p) => p.path.split("/")[0]));
  if (tops.size === 1 && picked[0].path.includes("/")) return `${[...tops][0]}/ (${picked.length} files)`;
  return `${picked.length} files`;
}

/**
 * Read the picked files into `[{ name, bytes: ArrayBuffer }]`, calling `onProgress(done, total)`
 * as they arrive: a DICOM series is hundreds of files. A half Analyze pair is refused here, with
 * the sentence the user needs, before anything is read.
 */
export async function readPicked(picked, onProgress) {
  if (picked.length === 0) throw new Error("no file was given (an empty folder?)");
  const lower = picked.map((p) => p.path.toLowerCase());
  const hdr = lower.filter((n) => n.endsWith(".hdr")).length;
  const img = lower.filter((n) => n.endsWith(".img")).length;
  if (hdr !== img) {
    const have = picked[lower.findIndex((n) => n.endsWith(hdr > img ? ".hdr" : ".img"))].path;
    throw new Error(`${have} is half of an Analyze/NIfTI pair: choose the .hdr and the .img together`);
  }
  const out = new Array(picked.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < picked.length) {
      const i = next++;
      const { file, path } = picked[i];
      try {
        out[i] = { name: path, bytes: await file.arrayBuffer() };
      } catch (e) {
        throw new Error(`${path} could not be read (${e.message})`);
      }
      onProgress?.(++done, picked.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_READS, picked.length) }, worker));
  return out;
}
