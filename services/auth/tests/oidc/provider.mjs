// A real OpenID provider (the certified npm package `oidc-provider`) for the auth service's tests.
//
// Usage: PORT=... CLIENT_ID=... CLIENT_SECRET=... REDIRECT_URI=... node provider.mjs
// It serves discovery, the authorization code flow with PKCE, ID tokens and userinfo on
// http://127.0.0.1:$PORT, with a minimal login page that checks a password, and auto-approves consent
// for the one first-party client (as an organisation's IdP does for its own applications).
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;

// Test users: one in the mapped group, one also in the admin group, one in no group at all.
const USERS = {
  alice: { password: 'alice-password', name: 'Alice Staff', email: 'alice@example.org', groups: ['staff'] },
  root: { password: 'root-password', name: 'Root Admin', email: 'root@example.org', groups: ['admins', 'staff'] },
  nobody: { password: 'nobody-password', name: 'No Body', email: 'nobody@example.org', groups: [] },
};

const SCOPES = 'openid email profile groups';

const configuration = {
  clients: [
    {
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      redirect_uris: [process.env.REDIRECT_URI],
      // RP-initiated logout: where the provider may send the browser back after ending its session.
      post_logout_redirect_uris: process.env.POST_LOGOUT_REDIRECT_URI ? [process.env.POST_LOGOUT_REDIRECT_URI] : [],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  cookies: { keys: ['test-only-cookie-signing-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: user.name, email: user.email, email_verified: true, groups: user.groups };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(SCOPES);
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
const oidc = provider.callback();

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, error) {
  return `<!doctype html><html><head><title>Sign in</title></head><body>
<h1>Sign in to the test provider</h1>
${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
  <label>Username <input name="login" autocomplete="username"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <button type="submit">Sign in</button>
</form></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    if (details.prompt.name !== 'login') {
      // Consent is granted by loadExistingGrant; anything else is not part of these tests.
      res.writeHead(501).end(`prompt ${details.prompt.name} not supported`);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(loginPage(details.uid));
    return;
  }
  const form = await readForm(req);
  const login = form.get('login') || '';
  const user = USERS[login];
  if (!user || user.password !== form.get('password')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      .end(loginPage(details.uid, 'Invalid username or password.'));
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
}

// Test control: a user's groups change at the provider (joined or left a group), as a directory admin
// would do it. POST /test/groups/<user> with the groups as a comma-separated body.
async function setGroups(req, res) {
  const name = decodeURIComponent(req.url.slice('/test/groups/'.length));
  if (req.method !== 'POST' || !USERS[name]) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks).toString().trim();
  USERS[name].groups = body ? body.split(',') : [];
  res.writeHead(204).end();
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/test/groups/')) {
    setGroups(req, res).catch((err) => res.writeHead(500).end(String(err)));
    return;
  }
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.writeHead(400, { 'content-type': 'text/plain' }).end(String(err));
    });
    return;
  }
  oidc(req, res);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
