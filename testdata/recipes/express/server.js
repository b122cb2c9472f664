const express = require('express');

const app = express();
app.all('/', (req, res) => res.send('hello from express\n'));
app.listen(process.env.PORT);
