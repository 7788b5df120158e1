// The page of ldbridge's browser test: the real analytics.js
// (@segment/analytics-next) and the real LaunchDarkly browser SDK
// (@launchdarkly/js-client-sdk), pointed at ldbridge on another origin.
// Bundled by esbuild (`npm run build`) into dist/page.js; run.mjs drives it.
// Settings are given inline: nothing is fetched from a CDN.
import { AnalyticsBrowser } from '@segment/analytics-next';
import { createClient } from '@launchdarkly/js-client-sdk';

window.bridge = {
  /** Loads both SDKs. `config`: { ingest, writeKey, clientSideId, flags }. */
  async start(config) {
    const apiHost = `${new URL(config.ingest).host}/v1`;
    const segment = { apiKey: config.writeKey, apiHost, protocol: 'http' };
    const [analytics] = await AnalyticsBrowser.load(
      {
        writeKey: config.writeKey,
        cdnSettings: {
          integrations: { 'Segment.io': segment },
          // analytics.js posts its own telemetry to {apiHost}/m.
          metrics: { flushTimer: 300, sampleRate: 1 },
        },
      },
      { integrations: { 'Segment.io': { apiHost, protocol: 'http' } } },
    );
    window.analytics = analytics;
    const ld = createClient(config.clientSideId, { kind: 'user', key: 'browser-user-1' }, {
      baseUri: config.flags,
      eventsUri: config.ingest,
      streaming: false,
      flushInterval: 60000,
    });
    await ld.start({ timeout: 10 });
    window.ld = ld;
    return 'started';
  },

  /** The calls a page makes; resolves once analytics.js has sent them. */
  async send() {
    await window.analytics.identify('browser-user-1', { plan: 'pro' });
    await window.analytics.track('Browser Checkout', { total: 42.5 });
    await window.analytics.page('Pricing');
    window.ld.variation('new-checkout', false);
    window.ld.track('browser-purchase', { basket: 3 }, 42.5);
    await window.ld.flush();
    return 'sent';
  },

  /** A JSON beacon, as pages send on unload: a credentialed request. */
  beacon(config) {
    const body = JSON.stringify({
      type: 'track',
      event: 'Beacon Left',
      anonymousId: 'beacon-anon-1',
      writeKey: config.writeKey,
    });
    return navigator.sendBeacon(`${config.ingest}/v1/t`, new Blob([body], { type: 'application/json' }));
  },

  /** A track sent without waiting for it (ldbridge may be down). */
  trackLater(name) {
    window.analytics.track(name, { late: true });
    return 'queued';
  },
};
