// A real OpenID Connect provider (npm's oidc-provider) for the identity-provider login test:
// one static client whose redirect URI is the hub's /hub/oauth_callback, and any account name
// logs in at its built-in form (devInteractions) with the claims preferred_username = the
// name and groups = ["staff"].
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
      grant_types: ["authorization_code"],
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
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  cookies: { keys: ["oidc-test-cookie-key-0123456789"] },
});
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => console.log(`ready ${issuer}`));
