// Forward passes, module metadata and modes, checked against real PyTorch.
import { describe, expect, it } from 'vitest';
import { load, ScriptModule, Tensor } from '../lib';
import { expectMatches, fixtures, inputsOf, model } from './helpers/fixtures';

async function runCases(name: string, m: ScriptModule): Promise<void> {
  for (const c of model(name).cases) {
    m.train(c.mode === 'train');
    const out = await m.run(c.method, ...inputsOf(c));
    expectMatches(out, c.output, c.atol ?? 1e-5, `${name}.${c.method}`);
  }
}

describe('forward matches PyTorch', () => {
  const names = ['convbn_scripted', 'convbn_traced', 'multi_method', 'resnet18_scripted',
    'resnet18_traced', 'mobilenet_v2_traced'];
  for (const name of names) {
    it(name, async () => {
      const m = await load(model(name).path);
      await runCases(name, m);
      await m.dispose();
    });
  }

  it('forward() is run("forward")', async () => {
    const f = model('convbn_scripted');
    const m = await load(f.path);
    expectMatches(await m.forward(...inputsOf(f.cases[0])), f.cases[0].output);
  });
});

describe('module metadata', () => {
  it('methods lists forward and exported methods, as PyTorch does', async () => {
    // ops_nms needs torchvision's operator library: oplib.test.ts covers it.
    for (const name of Object.keys(fixtures().models).filter((n) => n !== 'ops_nms')) {
      const m = await load(model(name).path);
      expect([...m.methods].sort(), name).toEqual(model(name).methods);
      await m.dispose();
    }
  });

  it('namedModules, parameters and buffers describe the module tree', async () => {
    const m = await load(model('resnet18_scripted').path);
    const modules = m.namedModules();
    expect(modules[0]).toEqual({ path: '', type: 'torchvision.models.resnet.ResNet' });
    expect(modules).toContainEqual({ path: 'layer1.0.conv1', type: 'torch.nn.modules.conv.Conv2d' });
    expect(modules.filter((x) => x.type.endsWith('BatchNorm2d'))).toHaveLength(20);
    const params = m.parameters();
    expect(params).toContainEqual({ name: 'conv1.weight', shape: [64, 3, 7, 7], dtype: 'float32', device: 'cpu' });
    expect(params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0)).toBe(11_689_512);
    expect(m.buffers()).toContainEqual({ name: 'bn1.running_var', shape: [64], dtype: 'float32', device: 'cpu' });
    expect(m.device).toBe('cpu');
  });

  it('graph() returns the TorchScript IR of a method', async () => {
    const m = await load(model('multi_method').path);
    expect(m.graph()).toMatch(/^graph\(%self/);
    expect(m.graph()).toContain('prim::CallMethod');
    expect(m.graph('embed')).toMatch(/%scale(\.\d+)? : float/);
  });
});

describe('train and eval', () => {
  it('a module saved in training mode reports it and switches mode', async () => {
    const f = model('trainable');
    const m = await load(f.path);
    expect(m.training).toBe(f.training);
    expect(m.eval()).toBe(m);
    expect(m.training).toBe(false);
    expect(m.train().training).toBe(true);
  });

  it('outputs follow the mode (batch statistics in train, running statistics in eval)', async () => {
    const f = model('trainable');
    for (const c of f.cases) {
      const m = await load(f.path); // each case on a fresh module: train mode updates running stats
      m.train(c.mode === 'train');
      expectMatches(await m.forward(...inputsOf(c)), c.output, c.atol ?? 1e-5, c.mode);
    }
  });

  it('train(x) rejects non-booleans', async () => {
    const m = await load(model('trainable').path);
    expect(() => m.train('yes' as never)).toThrow(TypeError);
  });
});

describe('tensors through a forward', () => {
  it('outputs are new tensors; inputs are not modified', async () => {
    const f = model('convbn_scripted');
    const m = await load(f.path);
    const [x] = inputsOf(f.cases[0]) as Tensor[];
    const before = x.toTypedArray().slice();
    const y = (await m.forward(x)) as Tensor;
    expect(y).not.toBe(x);
    expect(x.toTypedArray()).toEqual(before);
  });
});
