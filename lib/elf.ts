/**
 * The shared libraries an ELF file names as NEEDED, read from its dynamic
 * section (64-bit little-endian ELF, as on linux-x64 and linux-arm64). Used to
 * tell which libtorch a library was linked against before it is loaded into a
 * process that already runs another one.
 */
import { promises as fsp } from 'fs';

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;

interface Segment { type: number; offset: number; vaddr: number; filesz: number }

/** NEEDED entries in order, or null when the file is not a 64-bit little-endian ELF with a dynamic section. */
export async function neededLibraries(file: string): Promise<string[] | null> {
  const fh = await fsp.open(file, 'r');
  try {
    const read = async (offset: number, length: number): Promise<Buffer> => {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    };
    const head = await read(0, 64);
    if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2 || head[5] !== 1) return null;
    const phoff = Number(head.readBigUInt64LE(0x20));
    const phentsize = head.readUInt16LE(0x36);
    const phnum = head.readUInt16LE(0x38);
    const table = await read(phoff, phentsize * phnum);
    const segments: Segment[] = [];
    for (let i = 0; i + phentsize <= table.length; i += phentsize) {
      segments.push({ type: table.readUInt32LE(i), offset: Number(table.readBigUInt64LE(i + 8)),
        vaddr: Number(table.readBigUInt64LE(i + 16)), filesz: Number(table.readBigUInt64LE(i + 32)) });
    }
    const dynamic = segments.find((s) => s.type === PT_DYNAMIC);
    if (!dynamic) return null;
    const entries = await read(dynamic.offset, dynamic.filesz);
    const needed: bigint[] = [];
    let strtab: bigint | undefined;
    for (let i = 0; i + 16 <= entries.length; i += 16) {
      const tag = entries.readBigInt64LE(i);
      if (tag === 0n) break;
      if (tag === DT_NEEDED) needed.push(entries.readBigUInt64LE(i + 8));
      if (tag === DT_STRTAB) strtab = entries.readBigUInt64LE(i + 8);
    }
    if (strtab === undefined) return null;
    // DT_STRTAB is an address: the PT_LOAD segment that holds it maps it to a file offset.
    const at = Number(strtab);
    const load = segments.find((s) => s.type === PT_LOAD && at >= s.vaddr && at < s.vaddr + s.filesz);
    if (!load) return null;
    const base = at - load.vaddr + load.offset;
    const names: string[] = [];
    for (const n of needed) {
      const bytes = await read(base + Number(n), 256);
      const end = bytes.indexOf(0);
      names.push(bytes.subarray(0, end < 0 ? bytes.length : end).toString('utf8'));
    }
    return names;
  } finally {
    await fh.close();
  }
}
