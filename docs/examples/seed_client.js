// The T.A.R.S. Phase 2 report's Node.js example, unchanged but for its URLs
// (https:// and wss:// on port 8443). It trusts the gateway's certificate
// through Node's own variable:
//
//   npm install ws axios
//   NODE_EXTRA_CA_CERTS=certs/tars.crt node docs/examples/seed_client.js
const WebSocket = require('ws');
const axios = require('axios');

async function connectToTARS() {
  // 1. Authenticate
  const authResponse = await axios.post('https://localhost:8443/auth/token', {
    client_id: 'js-client-001',
    device_name: 'Node.js Client',
    device_type: 'nodejs'
  });

  const token = authResponse.data.access_token;

  // 2. Connect WebSocket
  const ws = new WebSocket(`wss://localhost:8443/ws/chat?token=${token}`);

  ws.on('open', () => {
    console.log('Connected');
  });

  ws.on('message', (data) => {
    const msg = JSON.parse(data);

    if (msg.type === 'connection_ack') {
      console.log('Session:', msg.session_id);

      // Send chat message
      ws.send(JSON.stringify({
        type: 'chat',
        content: 'Hello T.A.R.S.!',
        conversation_id: 'test-conv'
      }));
    } else if (msg.type === 'token') {
      process.stdout.write(msg.token);
    } else if (msg.type === 'complete') {
      console.log(`\n\nComplete (${msg.total_tokens} tokens)`);
      ws.close();
    }
  });
}

connectToTARS();
