#!/usr/bin/env node
// Entry point of the ctest `browser:status_page`:
//
//   node run.mjs --tollgate BIN --backend BIN [--out DIR] [--chromium PATH]
//
// Exits 77 (ctest SKIP_RETURN_CODE) only when no Chromium is installed;
// installs playwright-core with `npm ci` when node_modules is missing or
// does not match package-lock.json, then runs the tests with node's own
// test runner. Never downloads a browser.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

function arg(name, fallback) {
    const i = process.argv.indexOf(name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const tollgate = arg('--tollgate', process.env.TOLLGATE_BIN);
const backend = arg('--backend', process.env.TOLLGATE_BACKEND_BIN);
const out = arg('--out', process.env.TOLLGATE_BROWSER_OUT ?? path.join(here, 'out'));
const chromium = arg('--chromium', process.env.TOLLGATE_CHROMIUM ?? '/usr/bin/chromium');

if (!tollgate || !backend) {
    console.error('usage: node run.mjs --tollgate BIN --backend BIN [--out DIR] [--chromium PATH]');
    process.exit(2);
}
for (const bin of [tollgate, backend]) {
    if (!fs.existsSync(bin)) {
        console.error(`not found: ${bin} (build the tollgate and tollgate-demo-backend targets)`);
        process.exit(2);
    }
}
const node_major = Number(process.versions.node.split('.')[0]);
if (node_major < 20) {
    // Debian 12's own nodejs is 18: skipped there, not failed.
    console.log(`SKIP: node ${process.versions.node} is too old: playwright-core needs node >= 20`);
    process.exit(77);
}
if (!fs.existsSync(chromium)) {
    console.log(`SKIP: ${chromium} is not installed (apt-get install -y chromium)`);
    process.exit(77);
}

// npm ci when playwright-core is missing or is not the locked version.
function installedMatchesLock() {
    try {
        const lock = JSON.parse(fs.readFileSync(path.join(here, 'package-lock.json'), 'utf8'));
        const want = lock.packages['node_modules/playwright-core'].version;
        const have = JSON.parse(
            fs.readFileSync(path.join(here, 'node_modules/playwright-core/package.json'), 'utf8'),
        ).version;
        return want === have;
    } catch {
        return false;
    }
}
if (!installedMatchesLock()) {
    console.log('installing playwright-core: npm ci (tests/browser/node_modules)');
    const npm = spawnSync('npm', ['ci', '--no-audit', '--no-fund', '--ignore-scripts'], {
        cwd: here,
        stdio: 'inherit',
        timeout: 300_000,
    });
    if (npm.status !== 0 || !installedMatchesLock()) {
        console.error('npm ci failed in tests/browser (is npm installed and the npm registry reachable?)');
        process.exit(1);
    }
}

fs.mkdirSync(out, { recursive: true });
const test = spawnSync(
    process.execPath,
    ['--test', '--test-reporter=spec', path.join(here, 'status_page.test.mjs')],
    {
        cwd: here,
        stdio: 'inherit',
        timeout: 240_000,
        env: {
            ...process.env,
            TOLLGATE_BIN: path.resolve(tollgate),
            TOLLGATE_BACKEND_BIN: path.resolve(backend),
            TOLLGATE_BROWSER_OUT: path.resolve(out),
            TOLLGATE_CHROMIUM: chromium,
        },
    },
);
if (test.error) {
    console.error(`node --test: ${test.error.message}`);
    process.exit(1);
}
process.exit(test.status ?? 1);
