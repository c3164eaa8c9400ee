/**
 * Where a heap snapshot's memory is (node --heapsnapshot-signal, v8.writeHeapSnapshot): self size by type and
 * constructor, and the objects that retain the most (dominator tree, weak edges left out, as DevTools does), each
 * with the edge its dominator holds it by. Streams the file (a snapshot of a large heap is larger than a V8 string).
 *
 *   node --import tsx services/operator/bench/heap-summary.ts <file.heapsnapshot> [top=40] [edge name regex]
 *
 * With a regex, also the total retained by the objects their dominator holds by an edge of such a name (e.g.
 * `source_map_data` for the source maps Node keeps of every module once source maps are on, as tsx turns them).
 */
import { createReadStream } from 'node:fs';

interface Meta {
  node_fields: string[];
  node_types: [string[], ...unknown[]];
  edge_fields: string[];
  edge_types: [string[], ...unknown[]];
}

interface Snapshot {
  meta: Meta;
  nodes: Float64Array;
  edges: Uint32Array;
  strings: string[];
}

/** Parses the three big arrays by hand, the small header with JSON.parse. */
async function readSnapshot(path: string): Promise<Snapshot> {
  let header = '';
  let section: 'header' | 'nodes' | 'edges' | 'skip' | 'strings' | 'done' = 'header';
  let meta: Meta | undefined;
  let nodes = new Float64Array(1 << 20);
  let nodeCount = 0;
  let edges = new Uint32Array(1 << 20);
  let edgeCount = 0;
  const strings: string[] = [];
  let number = -1;
  let pending = '';
  let stringState: 'between' | 'in' | 'escape' = 'between';
  let stringStart = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 22 }) as AsyncIterable<Buffer>) {
    let i = 0;
    if (section === 'header') {
      const text = chunk.toString('latin1');
      const at = (header + text).indexOf('"nodes":[');
      if (at < 0) {
        header += text;
        continue;
      }
      const whole = header + text;
      meta = (JSON.parse(`${whole.slice(0, at).replace(/,\s*$/, '')}}`) as { snapshot: { meta: Meta } }).snapshot.meta;
      i = at + '"nodes":['.length - header.length;
      section = 'nodes';
    }
    for (; i < chunk.length && section !== 'done'; i++) {
      const c = chunk[i]!;
      if (section === 'nodes' || section === 'edges') {
        if (c >= 48 && c <= 57) number = (number < 0 ? 0 : number * 10) + (c - 48);
        else {
          if (number >= 0) {
            if (section === 'nodes') {
              if (nodeCount === nodes.length) {
                const grown = new Float64Array(nodes.length * 2);
                grown.set(nodes);
                nodes = grown;
              }
              nodes[nodeCount++] = number;
            } else {
              if (edgeCount === edges.length) {
                const grown = new Uint32Array(edges.length * 2);
                grown.set(edges);
                edges = grown;
              }
              edges[edgeCount++] = number;
            }
            number = -1;
          }
          if (c === 93) {
            // ']': the array ends. `,"edges":[` between the two arrays holds no digit: read as separators.
            section = section === 'nodes' ? 'edges' : 'skip';
            pending = '';
          }
        }
        continue;
      }
      if (section === 'skip') {
        // Skip to `"strings":[`, past the other (small) arrays.
        pending = (pending + String.fromCharCode(c)).slice(-11);
        if (pending === '"strings":[') {
          section = 'strings';
          stringState = 'between';
        }
        continue;
      }
      if (section === 'strings') {
        if (stringState === 'between') {
          if (c === 34) {
            stringState = 'in';
            stringStart = i;
            pending = '';
          } else if (c === 93) section = 'done';
        } else if (stringState === 'escape') stringState = 'in';
        else if (c === 92) stringState = 'escape';
        else if (c === 34) {
          const raw = pending + chunk.toString('utf8', stringStart, i + 1);
          strings.push(JSON.parse(raw) as string);
          pending = '';
          stringState = 'between';
        }
      }
    }
    if (section === 'strings' && stringState !== 'between') {
      pending += chunk.toString('utf8', stringStart);
      stringStart = 0;
    }
  }
  if (!meta) throw new Error('not a heap snapshot');
  return { meta, nodes: nodes.subarray(0, nodeCount), edges: edges.subarray(0, edgeCount), strings };
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1).padStart(8)} MiB`;

async function main(): Promise<void> {
  const [path, topArg, edgePattern] = process.argv.slice(2);
  if (!path) throw new Error('usage: heap-summary.ts <file.heapsnapshot> [top]');
  const top = Number(topArg ?? 40);
  const { meta, nodes, edges, strings } = await readSnapshot(path);
  const NF = meta.node_fields.length;
  const EF = meta.edge_fields.length;
  const nType = meta.node_fields.indexOf('type');
  const nName = meta.node_fields.indexOf('name');
  const nSelf = meta.node_fields.indexOf('self_size');
  const nEdges = meta.node_fields.indexOf('edge_count');
  const eType = meta.edge_fields.indexOf('type');
  const eName = meta.edge_fields.indexOf('name_or_index');
  const eTo = meta.edge_fields.indexOf('to_node');
  const nodeTypes = meta.node_types[0];
  const edgeTypes = meta.edge_types[0];
  const weak = edgeTypes.indexOf('weak');
  const count = nodes.length / NF;
  const firstEdge = new Uint32Array(count + 1);
  for (let n = 0, e = 0; n < count; n++) {
    firstEdge[n] = e;
    e += nodes[n * NF + nEdges]! * EF;
    firstEdge[n + 1] = e;
  }
  const typeOf = (n: number) => nodeTypes[nodes[n * NF + nType]!]!;
  const nameOf = (n: number) => strings[nodes[n * NF + nName]!] ?? '?';
  const selfOf = (n: number) => nodes[n * NF + nSelf]!;
  const edgeName = (e: number) => {
    const t = edgeTypes[edges[e + eType]!];
    return t === 'element' || t === 'hidden' ? `[${edges[e + eName]}]` : (strings[edges[e + eName]!] ?? '?');
  };

  let total = 0;
  const byName = new Map<string, { size: number; count: number }>();
  for (let n = 0; n < count; n++) {
    const type = typeOf(n);
    const label = type === 'object' || type === 'closure' || type === 'native' ? `${type} ${nameOf(n)}` : type === 'array' || type === 'hidden' ? `${type} ${nameOf(n)}` : type;
    const entry = byName.get(label) ?? { size: 0, count: 0 };
    entry.size += selfOf(n);
    entry.count++;
    byName.set(label, entry);
    total += selfOf(n);
  }
  process.stdout.write(`${count} nodes, ${edges.length / EF} edges, self sizes total ${mib(total)}\n\nself size by type and constructor:\n`);
  for (const [label, { size, count: c }] of [...byName].sort((a, b) => b[1].size - a[1].size).slice(0, top)) {
    process.stdout.write(`${mib(size)} ${String(c).padStart(9)}  ${label.slice(0, 100)}\n`);
  }

  // Dominators (Cooper, Harvey, Kennedy) over a DFS from the root (node 0), weak edges left out.
  const order = new Int32Array(count).fill(-1); // node → postorder index
  const post = new Int32Array(count); // postorder index → node
  let visited = 0;
  {
    const stack = new Int32Array(count);
    const cursor = new Uint32Array(count);
    const seen = new Uint8Array(count);
    let sp = 0;
    stack[sp++] = 0;
    seen[0] = 1;
    cursor[0] = firstEdge[0]!;
    while (sp > 0) {
      const n = stack[sp - 1]!;
      let pushed = false;
      while (cursor[n]! < firstEdge[n + 1]!) {
        const e = cursor[n]!;
        cursor[n] = e + EF;
        if (edges[e + eType] === weak) continue;
        const to = edges[e + eTo]! / NF;
        if (seen[to]) continue;
        seen[to] = 1;
        cursor[to] = firstEdge[to]!;
        stack[sp++] = to;
        pushed = true;
        break;
      }
      if (!pushed) {
        sp--;
        order[n] = visited;
        post[visited++] = n;
      }
    }
  }
  // Predecessors, as a CSR over reachable nodes.
  const predCount = new Uint32Array(count + 1);
  for (let n = 0; n < count; n++) {
    if (order[n]! < 0) continue;
    for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e += EF) if (edges[e + eType] !== weak) predCount[edges[e + eTo]! / NF + 1]!++;
  }
  for (let n = 0; n < count; n++) predCount[n + 1]! += predCount[n]!;
  const preds = new Uint32Array(predCount[count]!);
  const fill = predCount.slice(0, count);
  for (let n = 0; n < count; n++) {
    if (order[n]! < 0) continue;
    for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e += EF) if (edges[e + eType] !== weak) preds[fill[edges[e + eTo]! / NF]!++] = n;
  }
  const idom = new Int32Array(visited).fill(-1); // by postorder index
  const rootIndex = order[0]!;
  idom[rootIndex] = rootIndex;
  for (let changed = true, rounds = 0; changed; rounds++) {
    changed = false;
    for (let k = visited - 1; k >= 0; k--) {
      if (k === rootIndex) continue;
      const n = post[k]!;
      let best = -1;
      for (let p = predCount[n]!; p < predCount[n + 1]!; p++) {
        let b = order[preds[p]!]!;
        if (b < 0 || idom[b] === -1) continue;
        if (best < 0) {
          best = b;
          continue;
        }
        let a = best;
        while (a !== b) {
          while (a < b) a = idom[a]!;
          while (b < a) b = idom[b]!;
        }
        best = a;
      }
      if (best >= 0 && idom[k] !== best) {
        idom[k] = best;
        changed = true;
      }
    }
    if (rounds > 1000) break;
  }
  const retained = new Float64Array(visited);
  for (let k = 0; k < visited; k++) retained[k] = selfOf(post[k]!);
  // A dominator is a DFS ancestor, so it comes later in postorder: its subtree is complete when it is added up.
  for (let k = 0; k < visited; k++) {
    const d = idom[k]!;
    if (k !== rootIndex && d >= 0) retained[d] = retained[d]! + retained[k]!;
  }

  const synthetic = (n: number) => typeOf(n) === 'synthetic' || nameOf(n).startsWith('(');
  const candidates: number[] = [];
  for (let k = 0; k < visited; k++) if (!synthetic(post[k]!) && retained[k]! > 512 * 1024) candidates.push(k);
  candidates.sort((a, b) => retained[b]! - retained[a]!);
  process.stdout.write('\nlargest retained (dominator ← edge):\n');
  for (const k of candidates.slice(0, top)) {
    const n = post[k]!;
    const d = post[idom[k]!]!;
    let via = '';
    for (let e = firstEdge[d]!; e < firstEdge[d + 1]!; e += EF) if (edges[e + eTo]! / NF === n) via = edgeName(e);
    process.stdout.write(`${mib(retained[k]!)} ${typeOf(n)} ${nameOf(n).slice(0, 60)}  ← ${typeOf(d)} ${nameOf(d).slice(0, 40)}.${via.slice(0, 40)}\n`);
  }
  if (edgePattern) {
    const pattern = new RegExp(edgePattern);
    let sum = 0;
    let objects = 0;
    for (let k = 0; k < visited; k++) {
      if (k === rootIndex) continue;
      const n = post[k]!;
      const d = post[idom[k]!]!;
      for (let e = firstEdge[d]!; e < firstEdge[d + 1]!; e += EF) {
        if (edges[e + eTo]! / NF === n && pattern.test(edgeName(e))) {
          sum += retained[k]!;
          objects++;
          break;
        }
      }
    }
    process.stdout.write(`\nretained through edges matching /${edgePattern}/: ${mib(sum)} in ${objects} objects\n`);
  }
}

await main();
