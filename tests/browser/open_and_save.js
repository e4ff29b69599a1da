// Opens each notebook in a running JupyterLab as a reader would (headless Chromium driven by
// playwright-core), and fails when one is marked unsaved before any edit, when closing it
// asks to save, or when a save leaves it marked unsaved. check_jupyterlab.sh runs it.
//
//   node open_and_save.js http://127.0.0.1:PORT TOKEN notebooks/01_data.py ...
const { chromium } = require('playwright-core');

const [, , base, token, ...paths] = process.argv;
const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function open(page, path) {
  await page.goto(`${base}/lab/tree/${path}?token=${token}&reset`);
  await page.waitForSelector('.jp-Notebook .jp-Cell', { timeout: 90000 });
  await page.waitForTimeout(4000); // the kernel starts and reports its language
  return page.evaluate(() => {
    const widget = window.jupyterapp.shell.currentWidget;
    return { dirty: widget.context.model.dirty, kernel: widget.sessionContext.session?.kernel?.name ?? 'none' };
  });
}

(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_FLAGS });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  let failed = false;
  for (const path of paths) {
    const opened = await open(page, path);
    await page.evaluate(() => window.jupyterapp.commands.execute('application:close'));
    await page.waitForTimeout(1500);
    const dialogs = await page.locator('.jp-Dialog').count();
    if (dialogs) await page.keyboard.press('Escape');
    await open(page, path);
    await page.evaluate(() => window.jupyterapp.commands.execute('docmanager:save'));
    await page.waitForTimeout(1500);
    const dirtyAfterSave = await page.evaluate(() => window.jupyterapp.shell.currentWidget.context.model.dirty);
    const ok = !opened.dirty && dialogs === 0 && !dirtyAfterSave;
    failed ||= !ok;
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${path}: kernel ${opened.kernel}, unsaved on opening ${opened.dirty}, ` +
      `save dialog on closing ${dialogs > 0}, unsaved after saving ${dirtyAfterSave}`);
  }
  await browser.close();
  process.exit(failed ? 1 : 0);
})().catch((error) => { console.error(error); process.exit(2); });
