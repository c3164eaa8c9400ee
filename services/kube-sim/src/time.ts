/** The API's two time formats: Time (seconds) and MicroTime (Lease renewTime, Event eventTime). */
export const timestamp = (date: Date) => date.toISOString().replace(/\.\d{3}Z$/, 'Z');

export const microTime = (date: Date) => date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
