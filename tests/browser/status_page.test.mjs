// The admin port's /status page in a real headless Chromium (Debian's, driven
// by playwright-core): it loads, shows zeros without traffic, shows the
// allowed and limited numbers and the limited keys (display form, never the
// raw token) after real traffic through a real tollgate, updates without a
// reload, escapes key strings, and reports saturation, draining and an
// unreachable admin port.
//
// Started by run.mjs, which passes TOLLGATE_BIN, TOLLGATE_BACKEND_BIN,
// TOLLGATE_BROWSER_OUT (screenshots, config, logs) and TOLLGATE_CHROMIUM.
// Everything listens on 127.0.0.1 port 0; the ports are read from the
// processes' startup lines.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const out = process.env.TOLLGATE_BROWSER_OUT;
const CHROMIUM_ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
];
const LIMIT = 5; // rate_limit.limit per 60 s
const CAPACITY = 2; // concurrency.capacity
const WAIT_MS = 15_000; // bound of every wait for the page (the page polls every 2 s)

/// A child process whose output is kept, started once `ready` matches stderr.
async function start(bin, args, ready) {
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const p = { proc, stdout: '', stderr: '', exited: null };
    proc.stdout.on('data', (b) => (p.stdout += b));
    const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve((p.exited = { code, signal }))));
    p.wait_exit = () => exited;
    const match = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${bin}: no startup line in 10 s:\n${p.stderr}`)), 10_000);
        proc.stderr.on('data', (b) => {
            p.stderr += b;
            const m = p.stderr.match(ready);
            if (m) {
                clearTimeout(timer);
                resolve(m);
            }
        });
        exited.then(({ code, signal }) => {
            clearTimeout(timer);
            reject(new Error(`${bin} exited (${code ?? signal}) before listening:\n${p.stderr}`));
        });
    });
    p.match = match;
    return p;
}

async function stop(p) {
    if (!p || p.exited) return;
    p.proc.kill('SIGTERM');
    const timer = setTimeout(() => p.proc.kill('SIGKILL'), 10_000);
    await p.wait_exit();
    clearTimeout(timer);
}

const token = (name) => `tg-browser-${name}-${randomBytes(8).toString('hex')}`;
const display = (t) => 'tok:' + createHash('sha256').update(t).digest('hex').slice(0, 12);

let backend;
let gate;
let proxy; // http://127.0.0.1:port
let admin;
let browser;
let page;
const tokens = { a: token('a'), b: token('b'), c: token('c'), d: token('d'), e: token('e'), f: token('f') };
const navigations = [];
const foreign_requests = [];
const page_errors = []; // uncaught exceptions and console errors on the main page

/// Sends `n` sequential GETs with `tok` as bearer token; returns the status codes.
async function send(tok, n, target = '/') {
    const codes = [];
    for (let i = 0; i < n; i++) {
        const res = await fetch(proxy + target, { headers: { authorization: `Bearer ${tok}` } });
        await res.arrayBuffer();
        codes.push(res.status);
    }
    return codes;
}
const count = (codes, status) => codes.filter((c) => c === status).length;

const text = (testid) => page.getByTestId(testid).textContent();

before(async () => {
    assert.ok(out, 'TOLLGATE_BROWSER_OUT is set (run through run.mjs)');
    fs.mkdirSync(out, { recursive: true });
    backend = await start(process.env.TOLLGATE_BACKEND_BIN, ['--listen', '127.0.0.1:0'], /listening on 127\.0\.0\.1:(\d+)/);
    const config = path.join(out, 'status_page.yaml');
    fs.writeFileSync(
        config,
        [
            'listen: 127.0.0.1:0',
            'threads: 2',
            'admin:',
            '  listen: 127.0.0.1:0',
            'upstream:',
            `  servers: [http://127.0.0.1:${backend.match[1]}]`,
            'rate_limit:',
            `  limit: ${LIMIT}`,
            '  window: 60s',
            'concurrency:',
            `  capacity: ${CAPACITY}`,
            'log:',
            '  access_log: true',
            'shutdown:',
            '  drain_timeout: 30s',
            '',
        ].join('\n'),
    );
    gate = await start(
        process.env.TOLLGATE_BIN,
        ['--config', config],
        /listening on 127\.0\.0\.1:(\d+), admin on 127\.0\.0\.1:(\d+)/,
    );
    proxy = `http://127.0.0.1:${gate.match[1]}`;
    admin = `http://127.0.0.1:${gate.match[2]}`;

    browser = await chromium.launch({
        executablePath: process.env.TOLLGATE_CHROMIUM ?? '/usr/bin/chromium',
        headless: true,
        args: CHROMIUM_ARGS,
        timeout: 30_000,
    });
    page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.setDefaultTimeout(WAIT_MS);
    page.on('framenavigated', (f) => {
        if (f === page.mainFrame()) navigations.push(f.url());
    });
    page.on('pageerror', (e) => page_errors.push(String(e)));
    page.on('console', (m) => {
        if (m.type() === 'error') page_errors.push(m.text());
    });
    page.on('request', (r) => {
        if (!r.url().startsWith(admin + '/')) foreign_requests.push(r.url());
    });
});

after(async () => {
    await browser?.close();
    await stop(gate);
    await stop(backend);
    if (gate) fs.writeFileSync(path.join(out, 'tollgate.log'), gate.stderr + gate.stdout);
});

test('the page loads and shows zeros, not NaN, before any traffic', async () => {
    const res = await page.goto(admin + '/status');
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-type'], /^text\/html/);
    assert.equal(await page.title(), 'tollgate status');
    await page.waitForFunction(() => Number(document.body.dataset.polls) >= 2);

    assert.equal(await page.getByTestId('state-box').getAttribute('data-state'), 'healthy');
    assert.equal(await text('state'), 'Healthy');
    for (const id of ['rate-allowed', 'rate-limited', 'rate-rejected', 'total-allowed', 'total-limited', 'total-rejected', 'slots-inflight']) {
        assert.equal(await text(id), '0', id);
    }
    assert.equal(await text('slots-capacity'), String(CAPACITY));
    assert.equal(await page.getByTestId('limited-key').count(), 0);
    const body = await page.locator('body').innerText();
    assert.doesNotMatch(body, /NaN|undefined|Infinity|null/);
    assert.deepEqual(foreign_requests, [], 'the page loads nothing from another origin');
});

test('after traffic: non-zero allowed and limited, limited keys in display form, no raw token', async () => {
    const a = await send(tokens.a, LIMIT + 7);
    const b = await send(tokens.b, 3);
    const c = await send(tokens.c, LIMIT + 3);
    assert.deepEqual([count(a, 200), count(a, 429)], [LIMIT, 7], 'token a: LIMIT allowed, then 429');
    assert.deepEqual([count(b, 200), count(b, 429)], [3, 0], 'token b: under the limit');
    assert.deepEqual([count(c, 200), count(c, 429)], [LIMIT, 3], 'token c: LIMIT allowed, then 429');
    const allowed = 2 * LIMIT + 3;
    const limited = 10;

    await page.waitForFunction(
        ([allowed, limited]) => {
            const t = (id) => document.querySelector(`[data-testid="${id}"]`).textContent;
            return t('total-allowed') === String(allowed) && t('total-limited') === String(limited) &&
                t('rate-allowed') !== '0' && t('rate-limited') !== '0';
        },
        [allowed, limited],
    );
    assert.ok(Number(await text('rate-allowed')) > 0);
    assert.ok(Number(await text('rate-limited')) > 0);
    assert.equal(await page.getByTestId('state-box').getAttribute('data-state'), 'limiting');
    assert.match(await text('state'), /^Limiting [\d.]+ req\/s$/);
    assert.match(await text('upstream-p99'), /ms|s$/, 'a latency estimate once requests went upstream');

    // The refusal table: a (7 refused) before c (3), b absent; display form only.
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="limited-key"]').length === 2);
    const rows = await page.getByTestId('limited-key').evaluateAll((trs) =>
        trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
    );
    assert.deepEqual(
        rows.map((r) => [r[0], r[1], r[3]]),
        [
            [display(tokens.a), 'tok', '7'],
            [display(tokens.c), 'tok', '3'],
        ],
    );
    assert.match(rows[0][0], /^tok:[0-9a-f]{12}$/);

    const html = await page.content();
    const body = await page.locator('body').innerText();
    for (const t of Object.values(tokens)) {
        assert.ok(!html.includes(t) && !body.includes(t), 'raw token absent from the page');
        assert.ok(!gate.stdout.includes(t) && !gate.stderr.includes(t), 'raw token absent from the logs');
    }
    assert.doesNotMatch(body, /NaN|undefined|Infinity/);
    await page.screenshot({ path: path.join(out, 'status_page.png'), fullPage: true });
});

test('the numbers update without a reload', async () => {
    await page.evaluate(() => (window.__same_document = true));
    const navigated = navigations.length;
    const polls = Number(await page.evaluate(() => document.body.dataset.polls));
    const before_allowed = Number(await text('total-allowed'));
    const before_limited = Number(await text('total-limited'));

    const d = await send(tokens.d, 4);
    const a = await send(tokens.a, 2);
    assert.deepEqual([count(d, 200), count(a, 429)], [4, 2]);

    await page.waitForFunction(
        ([allowed, limited]) => {
            const t = (id) => document.querySelector(`[data-testid="${id}"]`).textContent;
            return t('total-allowed') === String(allowed) && t('total-limited') === String(limited);
        },
        [before_allowed + 4, before_limited + 2],
    );
    const rows = await page.getByTestId('limited-key').evaluateAll((trs) =>
        trs.map((tr) => [tr.cells[0].textContent, tr.cells[3].textContent]),
    );
    assert.deepEqual(rows[0], [display(tokens.a), '9']);
    assert.equal(await page.evaluate(() => window.__same_document), true, 'same document: no reload');
    assert.equal(navigations.length, navigated, 'no navigation');
    assert.ok(Number(await page.evaluate(() => document.body.dataset.polls)) > polls);
    assert.deepEqual(page_errors, [], 'no script error or failed load on the page');
    assert.deepEqual(foreign_requests, [], 'the page loads nothing from another origin');
});

test('key strings from /debug/keys are inserted as text, never as HTML', async () => {
    const evil = '<img src=x onerror="window.__pwned=1">';
    const evil2 = '<script>window.__pwned=2</script>';
    const p = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    try {
        await p.route('**/debug/keys*', (route) =>
            route.fulfill({
                contentType: 'application/json',
                body: JSON.stringify({
                    window_seconds: 120,
                    limited: [{ key_type: 'org', key: 'org:' + evil, refused: 5 }],
                    in_flight: [{ key_type: 'ip', key: evil2, in_flight: 1 }],
                    slots: { in_flight: 1, capacity: 2, active_keys: 1 },
                    requests: { allowed: 0, limited: 0, rejected: 0 },
                    draining: false,
                }),
            }),
        );
        await p.goto(admin + '/status');
        await p.waitForFunction(() => document.querySelectorAll('[data-testid="limited-key"]').length === 1);
        assert.equal(await p.getByTestId('limited-key').locator('td').first().textContent(), 'org:' + evil);
        assert.equal(await p.getByTestId('inflight-key').locator('td').first().textContent(), evil2);
        assert.equal(await p.locator('main img, main script').count(), 0);
        assert.equal(await p.evaluate(() => window.__pwned), undefined);
    } finally {
        await p.close();
    }
});

test('an unreachable admin endpoint is shown as such', async () => {
    const p = await browser.newPage();
    try {
        await p.route('**/metrics', (route) => route.abort());
        await p.goto(admin + '/status?interval=500');
        await p.waitForFunction(() => document.querySelector('[data-testid="state-box"]').dataset.state === 'unreachable' &&
            Number(document.body.dataset.errors) >= 1);
        assert.equal(await p.getByTestId('state').textContent(), 'Unreachable');
    } finally {
        await p.close();
    }
});

test('held slots show as saturated, then SIGTERM shows draining', async () => {
    const p = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    try {
        await p.goto(admin + '/status?interval=500');
        await p.waitForFunction(() => Number(document.body.dataset.polls) >= 1);
        // Two slow exchanges hold both slots (one each, from two keys).
        const slow = [send(tokens.e, 1, '/slow?ms=8000'), send(tokens.f, 1, '/slow?ms=8000')];
        await p.waitForFunction(() => document.querySelector('[data-testid="state-box"]').dataset.state === 'saturated');
        assert.equal(await p.getByTestId('slots-inflight').textContent(), String(CAPACITY));
        assert.equal(await p.getByTestId('state').textContent(), 'Slots saturated');
        await p.waitForFunction(() => document.querySelectorAll('[data-testid="inflight-key"]').length === 2);
        const keys = await p.getByTestId('inflight-key').evaluateAll((trs) => trs.map((tr) => tr.cells[0].textContent).sort());
        assert.deepEqual(keys, [display(tokens.e), display(tokens.f)].sort());
        await p.screenshot({ path: path.join(out, 'status_page_saturated.png'), fullPage: true });

        gate.proc.kill('SIGTERM');
        await p.waitForFunction(() => document.querySelector('[data-testid="state-box"]').dataset.state === 'draining');
        assert.equal(await p.getByTestId('state').textContent(), 'Draining');
        const codes = (await Promise.all(slow)).flat();
        assert.deepEqual(codes, [200, 200], 'the exchanges in flight finish while draining');
        assert.equal((await gate.wait_exit()).code, 0);
        await p.waitForFunction(() => document.querySelector('[data-testid="state-box"]').dataset.state === 'unreachable');
    } finally {
        await p.close();
    }
});
