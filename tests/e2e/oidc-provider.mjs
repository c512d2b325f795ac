// A real OpenID Connect provider (npm's oidc-provider) for the identity-provider login test:
// one static client whose redirect URI is the hub's /hub/oauth_callback, and any account name
// logs in at its built-in form (devInteractions) with the claims preferred_username = the
// name and groups = ["staff"].
//
// Every login gets a refresh token; access tokens live OIDC_ACCESS_TTL seconds (default an
// hour), so a test can let one expire; tokens can be revoked at /token/revocation.
//
// Usage: node oidc-provider.mjs PORT CALLBACK_URL; prints "ready ISSUER" once listening.
import Provider from "oidc-provider";

const [port, callback] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "jupyterhub",
      client_secret: "jupyterhub-client-secret-0123456789",
      redirect_uris: [callback],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, groups: ["staff"] };
      },
    };
  },
  claims: { openid: ["sub"], profile: ["preferred_username", "groups"] },
  features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
  // Without offline_access (which needs prompt=consent): the client's grant types decide.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed("refresh_token"),
  ttl: { AccessToken: Number(process.env.OIDC_ACCESS_TTL || 3600) },
  // Expired tokens are refused at once (the default keeps them 15 s longer).
  clockTolerance: 0,
  pkce: { required: () => true },
  cookies: { keys: ["oidc-test-cookie-key-0123456789"] },
});
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => console.log(`ready ${issuer}`));
