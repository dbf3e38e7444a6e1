// The graphql-http server audits (GraphQL over HTTP conformance) against a running server.
//
//   node tests/audit/audit.mjs <graphql URL> <token>
//
// Prints one line per audit and exits 1 unless every audit is "ok". The audits run one
// after the other so the per-token concurrency cap never answers one of them.
import { serverAudits } from 'graphql-http';

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node audit.mjs <graphql URL> <token>');
  process.exit(2);
}

const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set('token', token);
  return fetch(input, { ...init, headers });
};

let failed = 0;
for (const { fn } of serverAudits({ url, fetchFn })) {
  const result = await fn();
  if (result.status === 'ok') {
    console.log(`ok     ${result.id} ${result.name}`);
    continue;
  }
  failed += 1;
  let body = '';
  try {
    body = (await result.response.text()).slice(0, 300);
  } catch {
    // the audit already read the body
  }
  console.log(`${result.status.padEnd(6)} ${result.id} ${result.name}`);
  console.log(`       ${result.reason}${body ? `\n       body: ${body}` : ''}`);
}
const total = serverAudits({ url, fetchFn }).length;
console.log(`${total - failed} ok, ${failed} not ok`);
process.exit(failed === 0 ? 0 : 1);
