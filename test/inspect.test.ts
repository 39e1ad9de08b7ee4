// inspect(): the fuse analysis plus a method's graph for JS (nodes with kind,
// module path, inputs linked to producers, outputs linked to consumers,
// shapes where known) and Graphviz DOT with the pairs highlighted. The node
// lists and links are checked against PyTorch's own graph walk
// (scripts/make_transform_fixtures.py: torch._C._jit_pass_inline on a copy).
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { GraphNode, GraphReport, load } from '../lib';
import { FIXTURES } from './helpers/fixtures';
import { manifestOf } from './helpers/subdir';

interface RefNode { kind: string; block: [number, number] | null; inputs: [number, number][]; outputs: number; cat_inputs?: string[] }
interface RefGraph { nodes: RefNode[]; returns: [number, number][] }
interface GraphCase { file: string; kind: string; note: string; inlined: RefGraph; graph: RefGraph }
const cases = manifestOf<{ graph: Record<string, GraphCase> }>('transform').graph;

/** PyTorch's reference encoding of one input: [node, output], [-1, graph input], [node, -1 - block parameter]. */
function encode(r: { node: number; output: number; input: number; block: number }): [number, number] {
  if (r.node === -1) return [-1, r.input];
  if (r.output === -1) return [r.node, -1 - r.input];
  return [r.node, r.output];
}

function producerKinds(g: GraphReport, n: GraphNode): string[] {
  const list = g.nodes[n.inputs[0].node];
  expect(list.kind).toBe('prim::ListConstruct');
  return list.inputs.map((r) => (r.node === -1 ? 'input' : g.nodes[r.node].kind));
}

describe.each(Object.entries(cases))('inspect %s', (_, c) => {
  for (const inlined of [true, false]) {
    it(`${inlined ? 'inlined' : 'as written'}: the same nodes and links as PyTorch's graph`, async () => {
      const m = await load(path.join(FIXTURES, 'transform', c.file));
      const { graph } = await m.inspect({ inlined });
      const ref = inlined ? c.inlined : c.graph;
      expect(graph.nodes.map((n) => n.kind)).toEqual(ref.nodes.map((n) => n.kind));
      graph.nodes.forEach((n, i) => {
        const r = ref.nodes[i];
        expect(n.inputs.map(encode), `${i} ${n.kind} inputs`).toEqual(r.inputs);
        expect(n.outputs.length).toBe(r.outputs);
        expect(r.block ? [n.parent, n.block] : [-1, -1], `${i} ${n.kind} block`).toEqual(r.block ?? [-1, -1]);
        // Consumers are the inverse of producers.
        n.outputs.forEach((o, k) => {
          for (const u of o.uses.filter((x) => x.node >= 0 && x.block === -1)) {
            expect(graph.nodes[u.node].inputs[u.input]).toMatchObject({ node: i, output: k });
          }
        });
        if (r.cat_inputs) expect(producerKinds(graph, n)).toEqual(r.cat_inputs);
      });
      expect(graph.outputs.map(encode)).toEqual(ref.returns);
    });
  }

  it('names module paths, propagates shapes, and highlights the pairs in DOT', async () => {
    const m = await load(path.join(FIXTURES, 'transform', c.file));
    const report = await m.inspect({ inputShapes: [[1, 3, 16, 16]] });
    const { graph, dot } = report;
    const pair = report.pairs[0];
    expect(pair.status).toBe('folded');
    const convs = graph.nodes.filter((n) => /^aten::(_convolution|conv2d)$/.test(n.kind));
    expect(convs.map((n) => n.module)).toContain(pair.conv);
    const bn = graph.nodes.find((n) => n.kind === 'aten::batch_norm')!;
    expect(bn.module).toBe(pair.norm);
    expect(bn.outputs[0].shape).toBeDefined();
    const cat = graph.nodes.find((n) => n.kind === 'aten::cat')!;
    expect(cat.outputs[0].shape?.[0]).toBe(1);
    expect(dot.startsWith('digraph')).toBe(true);
    expect(dot).toContain(pair.norm);
    expect(dot).toMatch(/fillcolor="?[^",\]]*(green|#[0-9a-fA-F]{6})/);
  });
});

describe('inspect options', () => {
  it('rejects unknown methods and bad options', async () => {
    const c = Object.values(cases)[0];
    const m = await load(path.join(FIXTURES, 'transform', c.file));
    await expect(m.inspect({ method: 'nope' })).rejects.toMatchObject({ code: 'ERR_METHOD_NOT_FOUND' });
    expect(() => m.inspect({ inlined: 'yes' as never })).toThrow(TypeError);
    expect(() => m.inspect({ inputShapes: [[1, -3]] })).toThrow(TypeError);
    expect(() => m.inspect({ bogus: 1 } as never)).toThrow(/bogus/);
  });
});
